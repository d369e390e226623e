"""Encoding on a real Dask cluster (LocalCluster workers on 127.0.0.1): the vectors one process makes, in the
same embedding cache, written by the workers; evaluation alike; bad cluster settings refused by name."""

from __future__ import annotations

import socket

import numpy as np
import pytest
from distributed import Client, LocalCluster, get_task_stream

from tasks.cluster import connection
from tasks.cluster.connection import Cluster, ClusterError, ClusterSpec, connected, using
from tasks.evaluation.evaluate import evaluate_model
from tasks.evaluation.settings import EvalSettings
from tasks.models.encoding import load_model
from tasks.models.resolve import BUNDLED_MINILM, resolve_model
from tasks.negatives.embeddings import SHARDS, _store, encode_cached, sidecar
from tasks.negatives.index import build_index

pytestmark = pytest.mark.integration

TEXTS = [f"{who} walked {how} to the {where} on day {i}" for i, (who, how, where) in enumerate(
    (w, h, p) for w in ("A man", "The old woman", "Two children", "Someone")
    for h in ("slowly", "quickly", "with a heavy bag and an umbrella") for p in ("river", "market", "station")
)] * 1  # fmt: skip


@pytest.fixture(scope="module")
def miner():
    return resolve_model(BUNDLED_MINILM)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    """Two single-threaded workers, for the whole module; each test that wants one process says so (using(None))."""
    with connected("local:2", str(tmp_path_factory.mktemp("cluster-data"))) as started:
        yield started


@pytest.mark.parametrize(
    ("setting", "expected"),
    [(None, None), ("none", None), ("local:3", ClusterSpec(local_workers=3)),
     ("tcp://10.0.0.5:8786", ClusterSpec(address="tcp://10.0.0.5:8786"))],
)  # fmt: skip
def test_the_setting_reads_as_written(setting, expected):
    assert ClusterSpec.parse(setting) == expected


@pytest.mark.parametrize("setting", ["local:0", "local", "10.0.0.5:8786", "tcp://host", "ray://x:1"])
def test_a_malformed_setting_is_refused_by_name(setting):
    with pytest.raises(ClusterError, match=f"parameter encode_cluster: .*{setting}"):
        ClusterSpec.parse(setting)


def test_an_unreachable_scheduler_is_refused_before_any_work(tmp_path, monkeypatch):
    monkeypatch.setattr(connection, "CONNECT_TIMEOUT", 2)
    with socket.socket() as free:  # a port nothing listens on
        free.bind(("127.0.0.1", 0))
        port = free.getsockname()[1]
    with pytest.raises(
        ClusterError, match=f"encode_cluster: cannot reach the Dask scheduler at tcp://127.0.0.1:{port}"
    ):
        with connected(f"tcp://127.0.0.1:{port}", str(tmp_path)):
            pytest.fail("connected to nothing")


def test_each_shard_is_counted_and_batched_on_the_worker_that_encodes_it(cluster, miner, tmp_path, monkeypatch):
    """The token counts that batch a shard are taken where the shard is encoded: the flow's process counts none
    (a pass over every text before the first shard is the one step that would not spread over the workers), and
    the workers' batches are the ones one process makes, so are their vectors."""
    import tasks.negatives.embeddings as embeddings

    texts = [*TEXTS, "", "word " * 400]
    with using(None):
        alone, _ = encode_cached(str(tmp_path / "alone"), miner, texts, batch_size=4, chunk=8)

    def counted_here(*args, **kwargs):
        raise AssertionError("the flow's process counted tokens")

    monkeypatch.setattr(embeddings, "text_token_lengths", counted_here)
    with get_task_stream(cluster.client) as stream:
        spread, encoded = encode_cached(str(tmp_path / "spread"), miner, texts, batch_size=4, chunk=8)
    assert encoded == len(set(texts))
    np.testing.assert_allclose(spread, alone, atol=1e-5)
    shards = [t for t in stream.data if t["key"].startswith("_encode_and_cache")]
    assert len(shards) == -(-len(set(texts)) // 8) and len({t["worker"] for t in shards}) == 2


def test_workers_encode_the_vectors_one_process_makes_into_the_same_cache(cluster, miner, tmp_path):
    with using(None):
        alone, encoded_alone = encode_cached(str(tmp_path), miner, TEXTS, batch_size=8, chunk=16)
    with get_task_stream(cluster.client) as stream:
        spread, encoded_spread = encode_cached(cluster.data_dir, miner, TEXTS, batch_size=8, chunk=16)
    assert encoded_alone == encoded_spread == len(set(TEXTS))
    np.testing.assert_allclose(spread, alone, atol=1e-5)
    tasks = [t for t in stream.data if t["key"].startswith("_encode_and_cache")]
    assert len({t["worker"] for t in tasks}) == 2  # both workers encoded, and wrote, shards
    shards = sorted(_store(cluster.data_dir, miner).glob(SHARDS))
    assert len(shards) == len(tasks) and all(sidecar(s).is_file() for s in shards)
    again, encoded_again = encode_cached(cluster.data_dir, miner, TEXTS[:5])  # served by the cache, nothing encoded
    assert encoded_again == 0
    np.testing.assert_allclose(again, alone[:5], atol=1e-5)


def test_encodings_inside_a_block_that_holds_the_model_load_it_once(cluster, miner, tmp_path):
    """Several encodings in a row (a warm-up then the real one, or candidates then anchors) share the workers'
    copy; the block that loaded it unloads it, and a worker then holds no model."""
    from tasks.cluster.encoding import model_on_cluster

    def loaded() -> list[list[str]]:
        return list(cluster.client.run(lambda dask_worker: sorted(dask_worker.plugins)).values())

    before = loaded()
    with model_on_cluster(cluster, miner) as held:
        inside = loaded()
        assert all(held.plugin in names for names in inside)
        encode_cached(str(tmp_path / "a"), miner, TEXTS[:7], batch_size=4)
        encode_cached(str(tmp_path / "b"), miner, TEXTS[7:], batch_size=4)
        assert loaded() == inside and cluster.models[(miner.fingerprint, "fp32")] == held.plugin
    assert loaded() == before and not cluster.models
    encode_cached(str(tmp_path / "c"), miner, TEXTS[:3])  # without a block: loaded for the call, then gone
    assert loaded() == before


def test_evaluation_on_the_cluster_scores_as_one_process(cluster, miner, tmp_path):
    settings = EvalSettings(tasks=("Banking77Classification",), limit=40)
    model = load_model(miner, precision=settings.precision)
    with using(None):
        alone = evaluate_model(model, settings, tmp_path / "alone", resolved=miner)
    with get_task_stream(cluster.client) as stream:
        spread = evaluate_model(model, settings, tmp_path / "spread", resolved=miner)
    assert any(t["key"].startswith("_encode_shard") for t in stream.data)
    assert spread.keys() == alone.keys()
    for metric in alone:
        assert spread[metric] == pytest.approx(alone[metric], abs=1e-6), metric


def test_workers_without_the_packages_are_refused_naming_them(cluster, monkeypatch):
    monkeypatch.setattr(connection, "PACKAGES", (*connection.PACKAGES, "no_such_package_here"))
    with pytest.raises(
        ClusterError, match=r"encode_cluster=local:2: worker tcp://127\.0\.0\.1:\d+ lacks no_such_package"
    ):
        connection.check_workers(cluster)


def test_the_workers_write_the_shards_straight_into_an_object_store(store_url, miner, tmp_path):
    with connected("local:1", store_url):
        _, encoded = encode_cached(store_url, miner, TEXTS[:12])
    assert encoded == 12
    mirror = _store(store_url, miner)
    for shard in mirror.parent.rglob("*"):  # this machine's copy gone: the vectors come back from the store
        if shard.is_file():
            shard.unlink()
    with using(None):
        _, encoded = encode_cached(store_url, miner, TEXTS[:12])
    assert encoded == 0


def test_workers_that_cannot_read_the_store_are_refused(store_url):
    local = LocalCluster(n_workers=1, threads_per_worker=1, host="127.0.0.1", dashboard_address="127.0.0.1:0",
                         env={"AWS_SECRET_ACCESS_KEY": "not-the-key"})  # fmt: skip
    try:
        with Client(local) as client:
            cluster = Cluster(ClusterSpec(address=local.scheduler_address), client, store_url)
            with pytest.raises(ClusterError, match=r"worker tcp://127\.0\.0\.1:\d+ cannot read the store"):
                connection.check_workers(cluster)
    finally:
        local.close()


@pytest.mark.parametrize("exact_limit", [10_000, 500])  # flat, then IVF (the corpus above the exact limit)
def test_search_on_the_workers_finds_exactly_the_single_process_neighbours(cluster, exact_limit):
    rng = np.random.default_rng(0)
    corpus = rng.normal(size=(2_000, 16)).astype(np.float32)
    corpus /= np.linalg.norm(corpus, axis=1, keepdims=True)
    queries = corpus[rng.choice(len(corpus), 700, replace=False)]
    index = build_index(corpus, exact_limit=exact_limit)
    assert index.kind.startswith("flat" if exact_limit > len(corpus) else "ivf")
    with using(None):
        alone = list(index.search(queries, 10, batch_size=64))
    spread = list(index.search(queries, 10, batch_size=64))
    assert [start for start, _, _ in spread] == [start for start, _, _ in alone]
    for (_, scores_alone, ids_alone), (_, scores_spread, ids_spread) in zip(alone, spread):
        np.testing.assert_array_equal(ids_spread, ids_alone)
        np.testing.assert_array_equal(scores_spread, scores_alone)
