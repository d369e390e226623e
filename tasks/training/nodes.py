"""Training across nodes: one torchrun launch over several machines, an agent on each of the cluster's GPU workers.

With ``nodes > 1`` the training stage runs ``nodes × processes`` processes on the run's ``encode_cluster``: its GPU
workers (every worker of a CPU cluster, over gloo) each run one long Dask task pinned to them, which starts that
node's torchrun agent with c10d rendezvous at the first node. The model's key and the global batch stay the
recipe's: each process takes batch_size / (nodes × processes). The agents read the launch's inputs (``_ddp``: data,
spec, a copy of the models) from the build folder, and rank zero, on whichever node, writes the model, summary and
checkpoints there: the nodes must share its filesystem (NFS, or one machine), which a probe checks first. A failed
node stops the others and fails the stage naming it; the next run resumes from the last sealed checkpoint.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import shutil
import signal
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from tasks.cluster.connection import Cluster, current_cluster
from tasks.models.precision import Precision, runs_as
from tasks.training import distributed, gpu_slot
from tasks.training.node_agent import POLL_SECONDS, free_port, run_agent
from tasks.training.recipe import TrainRecipe, TrainRuntime
from tasks.training.tokens import TokenizedData

STOP_GRACE_SECONDS = 30.0  # once a node failed, how long the others get to stop before their tasks are let go


@dataclass(frozen=True)
class Node:
    """A training node: its Dask worker and the host its agent listens on."""

    worker: str
    host: str

    def __str__(self) -> str:
        return f"worker {self.worker} (host {self.host})"


def _has_gpu() -> bool:
    import torch

    return torch.cuda.is_available()


def training_nodes(cluster: Cluster) -> list[Node]:
    """The GPU workers in address order; every worker when none declares a GPU (a CPU cluster: gloo)."""
    workers = cluster.workers()
    return [Node(address, workers[address]["host"]) for address in cluster.gpu_workers() or sorted(workers)]


def check_nodes(runtime: TrainRuntime, cluster: Cluster | None) -> list[Node]:
    """The nodes a run trains on (none with ``nodes`` 1), refused before training, naming ``nodes``."""
    if runtime.nodes <= 1:
        return []
    if cluster is None:
        raise ValueError(f"parameter nodes: {runtime.nodes} training nodes needs encode_cluster, a Dask cluster "
                         "whose GPU workers train (tcp://scheduler:8786, local:N); or nodes=1")  # fmt: skip
    nodes = training_nodes(cluster)
    if cluster.spec.local_workers and not cluster.gpu_workers() and _has_gpu():  # every agent would take cuda:0..
        raise ValueError(f"parameter nodes: local:{cluster.spec.local_workers} workers share this machine's GPUs; "
                         "train on one machine with processes=<its GPUs> instead")  # fmt: skip
    if len(nodes) < runtime.nodes:
        kind = "GPU workers" if cluster.gpu_workers() else "workers (none declares a GPU)"
        raise ValueError(f"parameter nodes: {runtime.nodes}, but encode_cluster={cluster.spec.describe()} has "
                         f"{len(nodes)} {kind}: {', '.join(n.worker for n in nodes) or 'none'}")  # fmt: skip
    return nodes[: runtime.nodes]


def trains_as(requested: str, runtime: TrainRuntime) -> Precision:
    """The precision training really runs in, which the model's key holds: the nodes' (GPU workers train in
    half precision even when this machine has no GPU), else this machine's."""
    cluster = current_cluster()
    if runtime.nodes > 1 and cluster is not None:
        return Precision(cluster.runs_as(requested))
    return runs_as(requested)


def training_slot(device: str, runtime: TrainRuntime) -> contextlib.AbstractContextManager:
    """This machine's GPU slot around a training here; none across nodes, whose tasks each hold their node's GPU."""
    return gpu_slot.training_slot(device) if runtime.nodes == 1 else contextlib.nullcontext()


def train_launched(model_location: str, train: pd.DataFrame | TokenizedData, sts_validation: pd.DataFrame,
                   recipe: TrainRecipe, runtime: TrainRuntime, out_dir: Path, guide_location: str | None = None,
                   cluster: Cluster | None = None) -> dict:  # fmt: skip
    """A torchrun training's summary: one launch here (``processes``), or, with ``nodes`` > 1, one across the
    run's cluster (``cluster``, else ``current_cluster()``), its summary naming the nodes' hosts."""
    if runtime.nodes == 1:
        return distributed.train_distributed(model_location, train, sts_validation, recipe, runtime, out_dir,
                                             guide_location)  # fmt: skip
    cluster = cluster or current_cluster()
    nodes = check_nodes(runtime, cluster)
    assert cluster is not None
    per_device = recipe.per_device_batch(distributed.training_processes(runtime), runtime.nodes)
    spec_dir = out_dir.resolve() / "_ddp"
    model_location = _copied(model_location, spec_dir / "models" / "base")
    guide_location = None if guide_location is None else _copied(guide_location, spec_dir / "models" / "guide")
    spec_path = distributed.write_spec(model_location, train, sts_validation, recipe, runtime, out_dir, guide_location)
    check_shared(cluster.client, nodes, spec_dir)
    if recipe.mini_batch_size < 0:  # "auto": sized on a node's GPUs (this machine may have none)
        size = _on(cluster, nodes[0], _auto_mini_batch, str(spec_path), per_device).result(timeout=600)
        spec = json.loads(spec_path.read_text())
        spec["recipe"]["mini_batch_size"] = size
        spec_path.write_text(json.dumps(spec))
    launch(cluster, nodes, runtime, spec_path)
    summary = json.loads((out_dir / "training.json").read_text()) | {"nodes": [n.host for n in nodes]}
    (out_dir / "training.json").write_text(json.dumps(summary, indent=2, default=str))
    shutil.rmtree(spec_dir)
    return summary


def _copied(location: str, target: Path) -> str:
    """A model folder copied where every node reads it (a base model may lie in this machine's caches only)."""
    if not Path(location).is_dir():
        return location
    shutil.copytree(location, target, dirs_exist_ok=True)  # links followed: a hub cache's blobs are copied
    return str(target)


def _on(cluster: Cluster, node: Node, fn, *args, **kwargs):
    """``fn`` as a task pinned to ``node``'s worker, holding its GPU (a cluster's encoding waits meanwhile)."""
    return cluster.client.submit(fn, *args, **kwargs, workers=[node.worker], resources=cluster.encoding_resources(),
                                 pure=False, allow_other_workers=False)  # fmt: skip


def _auto_mini_batch(spec_path: str, per_device: int) -> int:
    """On a node: the cached loss's mini batch that ``mini_batch_size=-1`` picks against its GPUs."""
    spec = json.loads(Path(spec_path).read_text())
    data = distributed.read_training_data(Path(spec["dir"]), spec["tokenizer"])
    return distributed.shared_mini_batch(spec["model"], data, distributed.spec_recipe(spec), per_device)


def check_shared(client, nodes: list[Node], folder: Path) -> None:
    """Each node shares ``folder``: it reads a probe written here, and one it writes beside it is read here."""
    token = uuid.uuid4().hex
    probe = folder / f".probe-{token}"
    probe.write_text(token)
    try:
        answers = client.run(_probe_on_node, str(probe), token, workers=[n.worker for n in nodes])
    finally:
        probe.unlink(missing_ok=True)
    problems = []
    for number, node in enumerate(nodes, 1):
        error, back = answers.get(node.worker) or ("no answer", None)
        if back is not None and not (Path(back).is_file() and Path(back).read_text() == token):
            error = f"the probe it wrote, {back}, is not seen here"
        if back is not None:
            Path(back).unlink(missing_ok=True)
        if error:
            problems.append(f"node {number} of {len(nodes)}, {node}: {error}")
    if problems:
        raise RuntimeError(f"training nodes must share the filesystem of the build folder {folder} (NFS on a GPU "
                           "cluster, or one machine): " + "; ".join(problems))  # fmt: skip


def _probe_on_node(probe: str, token: str, dask_worker=None) -> tuple[str | None, str | None]:
    """On a node: whether it reads the probe (an error, or None), and the probe it wrote beside it."""
    back = f"{probe}.{hashlib.sha256(str(dask_worker.address).encode()).hexdigest()[:12]}"
    try:
        if Path(probe).read_text() != token:
            return f"{probe} differs from the one written", None
        Path(back).write_text(token)
    except OSError as exc:
        return f"cannot read {probe} and write beside it ({type(exc).__name__}: {exc})", None
    return None, back


def agent_args(runtime: TrainRuntime, endpoint: str, rdzv_id: str, node: Node, hosts: bool, spec: Path) -> list[str]:
    """A node's torchrun arguments: c10d rendezvous at ``endpoint`` (served by the node that ``hosts`` it), this
    node's address for its peers, no restarts (a failed node fails the stage; the re-run resumes)."""
    return [f"--nnodes={runtime.nodes}", f"--nproc-per-node={runtime.processes}", "--rdzv-backend=c10d",
            f"--rdzv-endpoint={endpoint}", f"--rdzv-id={rdzv_id}", f"--rdzv-conf=is_host={int(hosts)}",
            f"--local-addr={node.host}", "--max-restarts=0", "-m", "tasks.training.distributed", str(spec)]  # fmt: skip


def launch(cluster: Cluster, nodes: list[Node], runtime: TrainRuntime, spec_path: Path) -> None:
    """Every node's agent, started together and waited for; the first failure stops the rest and is raised."""
    from distributed import Event

    client, first = cluster.client, nodes[0]
    port = client.run(free_port, workers=[first.worker])[first.worker]
    rdzv_id = f"train-embeddings-{uuid.uuid4().hex[:12]}"
    stop = Event(rdzv_id, client=client)
    endpoint = f"{first.host}:{port}"
    futures = {n: _on(cluster, n, run_agent, agent_args(runtime, endpoint, rdzv_id, n, n == first, spec_path), n.host,
                      rdzv_id) for n in nodes}  # fmt: skip
    try:
        failures = _watch(cluster, futures)
    finally:
        stop.set()
        deadline = time.monotonic() + STOP_GRACE_SECONDS
        while not all(f.done() for f in futures.values()) and time.monotonic() < deadline:
            time.sleep(POLL_SECONDS / 4)
        others = [f"node {nodes.index(n) + 1}: {_outcome(f).split(':')[0]}" for n, f in futures.items()]
        client.cancel([f for f in futures.values() if not f.done()])
    if failures:
        named = [f"node {nodes.index(n) + 1} of {len(nodes)}, {n}, failed: {why}" for n, why in failures.items()]
        others = [line for n, line in zip(nodes, others) if n not in failures]
        raise RuntimeError(f"training across {len(nodes)} nodes failed: " + "; ".join(named) + (
            f" (then {'; '.join(others)})" if others else ""))  # fmt: skip


def _watch(cluster: Cluster, futures: dict) -> dict[Node, str]:
    """Wait until every agent succeeded or one failed: its exit code, its task's error, or its worker gone."""
    outcomes: dict[Node, str] = {}
    while True:
        outcomes |= {n: _outcome(f) for n, f in futures.items() if n not in outcomes and f.done()}
        failures = {n: why for n, why in outcomes.items() if why != "ok"}
        if not failures:
            present = cluster.workers()
            failures = {n: "its Dask worker left the cluster" for n in futures if n not in outcomes
                        and n.worker not in present}  # fmt: skip
        if failures or len(outcomes) == len(futures):
            killed = {n: why for n, why in failures.items() if "killed by" in why}  # a signal: the likelier cause
            return killed | failures
        time.sleep(POLL_SECONDS)


def _outcome(future) -> str:
    """How a node's task ended: "ok", the agent's exit (and signal) with its output's tail, or the task's error."""
    if not future.done():
        return "still running"
    if future.status != "finished":
        return f"its task ended {future.status}: {future.exception()!r}"
    result = future.result()
    if result["code"] == 0:
        return "ok"
    died = f", killed by {signal.Signals(-result['code']).name}" if result["code"] < 0 else ""
    if result["stopped"]:
        return f"torchrun exited {result['code']}{died}, stopped when another node failed"
    return f"torchrun exited {result['code']}{died}: ...{result['tail']}"
