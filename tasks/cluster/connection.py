"""The Dask cluster a run fans its encoding, search and training nodes out to (``encode_cluster``).

A runtime setting, never in a key: ``tcp://host:8786`` is a running scheduler (its workers started with
``dask worker tcp://host:8786 --resources GPU=1`` on GPU machines), ``local:N`` a LocalCluster of N
single-threaded worker processes on this machine, bound to 127.0.0.1, and none runs everything in this
process. The cluster is opened once, checked before any stage (reachable, workers with the packages and the
store), and the stages find it through ``current_cluster()`` for the length of the run.
"""

from __future__ import annotations

import contextlib
import contextvars
import re
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

PARAMETER = "encode_cluster"
CONNECT_TIMEOUT = 15  # seconds to reach a scheduler before the run is refused
PACKAGES = ("torch", "sentence_transformers", "faiss", "pyarrow", "tasks")  # what a worker imports to do our work
GPU = "GPU"  # the worker resource that marks a worker holding a GPU (dask worker --resources GPU=1)


class ClusterError(ValueError):
    """A cluster setting that cannot work; raised before any stage, naming the setting."""


@dataclass(frozen=True)
class ClusterSpec:
    """``encode_cluster`` parsed: a scheduler ``address``, or ``local_workers`` for a LocalCluster."""

    address: str | None = None
    local_workers: int = 0

    @classmethod
    def parse(cls, text: str | None) -> ClusterSpec | None:
        if text is None or text.strip().lower() in ("", "none"):
            return None
        text = text.strip()
        local = re.fullmatch(r"local:(\d+)", text)
        if local:
            if int(local.group(1)) < 1:
                raise ClusterError(f"parameter {PARAMETER}: local:N needs at least 1 worker, got {text!r}")
            return cls(local_workers=int(local.group(1)))
        if re.fullmatch(r"(tcp|tls)://[^\s/:]+:\d+", text):
            return cls(address=text)
        raise ClusterError(
            f"parameter {PARAMETER}: {text!r} is not a scheduler address (tcp://host:8786), local:N or none"
        )

    def describe(self) -> str:
        return self.address or f"local:{self.local_workers}"


@dataclass
class Cluster:
    """A connected cluster: the Dask client and what its workers hold."""

    spec: ClusterSpec
    client: Any  # distributed.Client
    data_dir: str
    models: dict[tuple[str, str], str] = field(default_factory=dict)  # (fingerprint, precision) → its plugin, loaded

    def workers(self) -> dict[str, dict]:
        """Worker address → its scheduler info (name, resources, nthreads, host)."""
        return dict(self.client.scheduler_info(n_workers=-1)["workers"])

    def gpu_workers(self) -> list[str]:
        """The workers that declare a GPU (``resources GPU``), in address order."""
        return sorted(a for a, info in self.workers().items() if info.get("resources", {}).get(GPU, 0) >= 1)

    def encoding_resources(self) -> dict[str, float] | None:
        """Encoding goes to the GPU workers when some declare one, else to every worker."""
        return {GPU: 1} if self.gpu_workers() else None

    def runs_as(self, requested: str) -> str:
        """What the encoding workers run ``requested`` precision as (``models.precision.runs_as`` on each), which
        must be one answer: vectors of one run go to one store, and scores to one key."""
        answers = self.client.run(_runs_as_here, str(requested), workers=self.gpu_workers() or None)
        found = sorted(set(answers.values()))
        if len(found) != 1:
            raise ClusterError(f"parameter {PARAMETER}={self.spec.describe()}: its workers run precision {requested} "
                               f"as {found} ({answers}); give the cluster workers of one kind")  # fmt: skip
        return found[0]


_current: contextvars.ContextVar[Cluster | None] = contextvars.ContextVar("encode_cluster", default=None)


def current_cluster() -> Cluster | None:
    """The run's cluster, None when it encodes in process."""
    return _current.get()


def _start(spec: ClusterSpec) -> tuple[Any, Any]:
    """The client (and the LocalCluster it owns, if any); an unreachable scheduler is refused by name."""
    from distributed import Client, LocalCluster

    if spec.local_workers:
        local = LocalCluster(
            n_workers=spec.local_workers,
            threads_per_worker=1,
            processes=True,
            host="127.0.0.1",
            dashboard_address="127.0.0.1:0",  # the dashboard, for watching the work: loopback only
            scheduler_port=0,
            env={"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"},
        )
        try:
            return Client(local), local
        except BaseException:
            local.close()
            raise
    try:
        return Client(spec.address, timeout=CONNECT_TIMEOUT), None
    except (OSError, TimeoutError) as exc:
        raise ClusterError(
            f"parameter {PARAMETER}: cannot reach the Dask scheduler at {spec.address} within "
            f"{CONNECT_TIMEOUT} s ({type(exc).__name__}: {exc}); start it with `dask scheduler` and its workers "
            "with `dask worker <address>`, or run without encode_cluster"
        ) from None


def _runs_as_here(requested: str) -> str:
    """On a worker: what ``requested`` runs as on its device (the CPU: fp32)."""
    import torch

    from tasks.models.precision import runs_as

    return runs_as(requested, "cuda" if torch.cuda.is_available() else "cpu").value


def _worker_report(data_dir: str, probe: str | None, packages: tuple[str, ...]) -> dict:
    """Run on each worker: which of ``packages`` it lacks, and whether it can read the store."""
    import importlib

    missing = []
    for name in packages:
        try:
            importlib.import_module(name)
        except ImportError as exc:
            missing.append(f"{name} ({exc})")
    store = None
    try:
        from tasks.store import remote

        if remote.is_url(data_dir):
            remote.check(data_dir, write=False)
        elif probe is not None and not Path(probe).is_file():
            store = f"cannot see {probe} (data_dir {data_dir} is not on a filesystem this worker shares)"
    except Exception as exc:  # noqa: BLE001 - reported, whatever it is
        store = f"{type(exc).__name__}: {exc}"
    return {"missing": missing, "store": store}


def check_workers(cluster: Cluster) -> None:
    """Every worker can do the work: our packages import, and the store is readable from it. A local
    ``data_dir`` must be a filesystem the workers share (a probe file written here is looked for there)."""
    from tasks.store import remote

    workers = cluster.workers()
    if not workers:
        raise ClusterError(f"parameter {PARAMETER}: the scheduler at {cluster.spec.describe()} has no workers")
    probe = None
    if not remote.is_url(cluster.data_dir):
        folder = Path(cluster.data_dir).resolve()
        folder.mkdir(parents=True, exist_ok=True)
        probe_path = folder / f".cluster-probe-{uuid.uuid4().hex}"
        probe_path.write_text("probe\n")
        probe = str(probe_path)
    try:
        reports = cluster.client.run(_worker_report, cluster.data_dir, probe, PACKAGES)
    finally:
        if probe is not None:
            with contextlib.suppress(FileNotFoundError):
                Path(probe).unlink()
    problems = []
    for address, report in sorted(reports.items()):
        if report["missing"]:
            problems.append(f"worker {address} lacks {', '.join(report['missing'])}")
        if report["store"]:
            problems.append(f"worker {address} cannot read the store: {report['store']}")
    if problems:
        raise ClusterError(f"parameter {PARAMETER}={cluster.spec.describe()}: " + "; ".join(problems))


@contextlib.contextmanager
def connected(setting: str | None, data_dir: str) -> Iterator[Cluster | None]:
    """The run's cluster, checked, and current for everything inside the block; None without one. A
    LocalCluster started here is closed at the end."""
    spec = ClusterSpec.parse(setting)
    if spec is None:
        yield None
        return
    client, local = _start(spec)
    cluster = Cluster(spec, client, data_dir)
    token = _current.set(cluster)
    try:
        check_workers(cluster)
        yield cluster
    finally:
        _current.reset(token)
        client.close()
        if local is not None:
            local.close()


@contextlib.contextmanager
def using(cluster: Cluster | None) -> Iterator[None]:
    """Make ``cluster`` current inside a Prefect task's thread (a task runs in a copy of the flow's context)."""
    token = _current.set(cluster)
    try:
        yield
    finally:
        _current.reset(token)
