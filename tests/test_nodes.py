"""Training across nodes: real torchrun agents with c10d rendezvous, one per worker of a real Dask LocalCluster on
127.0.0.1 (two "nodes" of one gloo process each, on CPU), launched by the training stage's own function."""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import psutil
import pytest
from prefect import flow
from prefect.testing.utilities import prefect_test_harness

from tasks import stages
from tasks.cluster.connection import connected
from tasks.evaluation.data import stsb_pairs
from tasks.models.resolve import resolve_model
from tasks.negatives.strategies import MiningConfig, soft_negatives
from tasks.pairs.labels import pairs_for_loss
from tasks.store.artifacts import Built, materialize
from tasks.store.catalog import VERSIONS
from tasks.training import nodes, tokens
from tasks.training.checkpoints import SEAL
from tasks.training.distributed import training_processes
from tasks.training.recipe import TrainRecipe, TrainRuntime, recipe_and_runtime
from tasks.training.trainer import train_model

pytestmark = pytest.mark.integration


def _torchruns(marker: str) -> list[psutil.Process]:
    """This machine's torchrun agents and training processes whose command line names ``marker``."""
    found = []
    for proc in psutil.process_iter(["cmdline"]):
        line = " ".join(proc.info["cmdline"] or [])
        if marker in line and ("torch.distributed.run" in line or "tasks.training.distributed" in line):
            found.append(proc)
    return found


@pytest.fixture(scope="module")
def work(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("nodes")


@pytest.fixture(scope="module")
def cluster(work):
    """Two single-threaded Dask workers on 127.0.0.1; afterwards none of their processes, nor any torchrun
    launched from this module, is left."""
    with connected("local:2", str(work / "data")) as cluster:
        pids = set(cluster.client.run(os.getpid).values())  # the workers (their nannies run in this process)
        yield cluster
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and (any(psutil.pid_exists(p) for p in pids) or _torchruns(str(work))):
        time.sleep(0.2)
    assert not [p for p in pids if psutil.pid_exists(p) and psutil.Process(p).status() != psutil.STATUS_ZOMBIE]
    assert _torchruns(str(work)) == []


@pytest.fixture(scope="module")
def bert(work) -> Path:
    """The tiny BERT with dropout off, so one process and two compute the same function."""
    from bench.data import TINY_BERT, build_bert

    return build_bert(work, TINY_BERT | {"hidden_dropout_prob": 0.0, "attention_probs_dropout_prob": 0.0}, 64)


@pytest.fixture(scope="module")
def triplets(nli_sample):
    """84 rows: seven whole batches of 12 (as in test_training's two-process test)."""
    return soft_negatives(pairs_for_loss(nli_sample, "mnr"), nli_sample, MiningConfig()).head(84)


def test_two_nodes_train_the_one_process_model(cluster, bert, triplets, work):
    """Two nodes of one process each take 6 rows of the same 12-row global batches, MNR gathering across them:
    the steps and loss curve of one process, within the two-process test's tolerance."""
    sts = stsb_pairs("validation", 20)
    settings = dict(loss="mnr", batch_size=12, warmup_steps=1, max_steps=7, eval_steps=1, checkpoint_steps=0)
    one = train_model(str(bert), triplets, sts, *recipe_and_runtime(**settings), work / "one")
    config = recipe_and_runtime(**settings, nodes=2, processes=1)
    two = nodes.train_launched(str(bert), triplets, sts, *config, work / "two", cluster=cluster)
    assert (one["processes"], two["processes"]) == (1, 2) and two["nodes"] == ["127.0.0.1", "127.0.0.1"]
    assert one["steps"] == two["steps"] == 7 and two["per_device_batch"] == 6
    curve = [[e["loss"] for e in run["log_history"] if "loss" in e] for run in (one, two)]
    assert len(curve[0]) == len(curve[1]) == 7
    np.testing.assert_allclose(curve[1], curve[0], rtol=1e-4)
    assert not (work / "two" / "_ddp").exists() and (work / "two" / "model").is_dir()


def _tokens_artifact(data_dir: Path, base, frame):
    """A tokens artifact of ``frame``, as the tokenize stage writes it."""
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(base.location)
    spec = tokens.tokenizer_spec(model)

    def build(folder) -> Built:
        return Built(tokens.write_tokens(tokens.tokenize_frame(frame, "mnr", model), folder))

    params = {"tokenizer": spec.fingerprint, "max_seq_length": spec.max_seq_length, "loss": "mnr", "test": "nodes"}
    return materialize(data_dir, "tokens", VERSIONS["tokens"], params, [], build, facts={"tokenizer": spec.as_dict()})


def _kill_second_node_once_sealed(cluster, trainer: Path, killed: list) -> None:
    """Once the first checkpoint is sealed, SIGKILL the second node's torchrun agent and its training process."""
    second = nodes.training_nodes(cluster)[1].worker
    worker = psutil.Process(cluster.client.run(os.getpid, workers=[second])[second])
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and not list(trainer.glob(f"checkpoint-*/{SEAL}")):
        time.sleep(0.05)
    for proc in worker.children(recursive=True):
        proc.send_signal(signal.SIGKILL)
        killed.append(proc.pid)
    killed.insert(0, second)


@flow(name="train-on-two-nodes")
def _training_flow(ids, base, recipe: TrainRecipe, runtime: TrainRuntime, data_dir: str):
    """The training stage as the flow runs it: a task, finding the run's cluster."""
    return stages.train(ids, base, recipe, runtime, data_dir)


def test_a_killed_node_fails_the_stage_naming_it_and_the_rerun_resumes(cluster, bert, triplets, work):
    data_dir = work / "data"
    base = resolve_model(str(bert))
    recipe, runtime = recipe_and_runtime(loss="mnr", batch_size=12, warmup_steps=1, max_steps=20, eval_steps=0,
                                         mini_batch_size=-1, checkpoint_steps=4, nodes=2, processes=1)  # fmt: skip
    with prefect_test_harness(server_startup_timeout=120):
        ids = _tokens_artifact(data_dir, base, triplets)
        killed: list = []
        key = _model_key(ids, base, recipe, runtime)
        trainer = data_dir / "artifacts" / ".staging" / "models" / f".partial-{key}" / "_trainer"
        killer = threading.Thread(target=_kill_second_node_once_sealed, args=(cluster, trainer, killed))
        killer.start()
        with pytest.raises(RuntimeError, match="training across 2 nodes failed") as failed:
            _training_flow(ids, base, recipe, runtime, str(data_dir))
        killer.join()
        assert len(killed) > 2, "the second node's agent and process were killed"
        message = str(failed.value)
        assert message.index(f"node 2 of 2, worker {killed[0]} (host 127.0.0.1), failed") < message.index("node 1")
        assert "killed by SIGKILL" in message
        assert list(trainer.glob(f"checkpoint-*/{SEAL}")), "the killed run's sealed checkpoint is kept"

        model = _training_flow(ids, base, recipe, runtime, str(data_dir))
    manifest = json.loads((Path(model.path) / "manifest.json").read_text())
    assert manifest["training"]["resumed_from"].startswith("checkpoint-")
    assert manifest["training"]["steps"] == 20 and manifest["training"]["nodes"] == ["127.0.0.1"] * 2
    assert manifest["training"]["recipe"]["mini_batch_size"] == 0  # "auto", sized on the first node: no GPU, plain
    assert not trainer.parent.exists() and not (Path(model.path) / "_ddp").exists()


def _model_key(ids, base, recipe, runtime) -> str:
    from tasks.store.artifacts import artifact_key

    return artifact_key("models", VERSIONS["models"], stages.model_key_params(base, recipe, runtime, None), [ids])


def test_bad_settings_fail_before_training_naming_the_setting(cluster, bert, triplets, work):
    with pytest.raises(ValueError, match=r"parameter nodes: 3, but encode_cluster=local:2 has 2 workers"):
        nodes.check_nodes(TrainRuntime(nodes=3, processes=1), cluster)
    with pytest.raises(ValueError, match="parameter nodes: 2 training nodes needs encode_cluster"):
        nodes.check_nodes(TrainRuntime(nodes=2, processes=1), None)
    assert [n.host for n in nodes.check_nodes(TrainRuntime(nodes=2, processes=1), cluster)] == ["127.0.0.1"] * 2
    assert nodes.check_nodes(TrainRuntime(), None) == []
    base, recipe = resolve_model(str(bert)), TrainRecipe(batch_size=12)
    here, across = TrainRuntime(), TrainRuntime(nodes=2, processes=3)  # the same model: the same key
    assert stages.model_key_params(base, recipe, across, None) == stages.model_key_params(base, recipe, here, None)
    assert training_processes(TrainRuntime(nodes=2, processes=5)) == 10
    with pytest.raises(ValueError, match=r"parameter batch_size: 12 .* over 10 training processes \(2 nodes × 5\)"):
        TrainRecipe(batch_size=12).per_device_batch(training_processes(TrainRuntime(nodes=2, processes=5)), 2)
    with pytest.raises(ValueError, match="parameter nodes: 1 .* got 0"):
        TrainRuntime(nodes=0).check()
    with pytest.raises(ValueError, match="parameter processes: with nodes=2"):
        TrainRuntime(nodes=2).check()
    sts = stsb_pairs("validation", 8)
    for settings in ({"nodes": 3, "batch_size": 12}, {"nodes": 2, "batch_size": 15}):
        config = recipe_and_runtime(loss="mnr", processes=1, **settings)
        with pytest.raises(ValueError, match=f"parameter {'nodes' if settings['nodes'] == 3 else 'batch_size'}"):
            nodes.train_launched(str(bert), triplets, sts, *config, work / "bad", cluster=cluster)
        assert not (work / "bad").exists()  # refused before any input was written


def test_nodes_that_do_not_share_the_build_folder_are_named(tmp_path):
    """A node that cannot see the probe written here (another filesystem) is named with the folder."""

    class OneNodeElsewhere:
        def run(self, fn, probe, token, workers):
            views = [probe, str(Path(probe).with_name("elsewhere"))]
            return {w: fn(view, token, dask_worker=SimpleNamespace(address=w)) for w, view in zip(workers, views)}

    pair = [nodes.Node("tcp://10.0.0.1:1", "10.0.0.1"), nodes.Node("tcp://10.0.0.2:1", "10.0.0.2")]
    with pytest.raises(RuntimeError, match="share the filesystem") as failed:
        nodes.check_shared(OneNodeElsewhere(), pair, tmp_path)
    message = str(failed.value)
    assert str(tmp_path) in message and "node 2 of 2, worker tcp://10.0.0.2:1 (host 10.0.0.2): cannot read" in message
    assert "node 1 of 2" not in message and list(tmp_path.iterdir()) == []  # both probes removed
