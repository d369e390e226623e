"""The store on object storage, as users meet it: a real S3 server (SeaweedFS) on loopback, machines that share
only its URL (each its own cache), a killed lease holder, a store that stops mid-upload, bad URLs."""

from __future__ import annotations

import contextvars
import hashlib
import json
import logging
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pandas as pd
import pytest

from tasks import promotion
from tasks.store import remote, transfer
from tasks.store.artifacts import find, materialize, write_parquet
from tasks.store.champion import ChampionChanged, champion_lock, read_champion, write_champion
from tasks.store.placement import ephemeral_warning
from tests.object_store import point_env_at

PROJECT = Path(__file__).resolve().parent.parent
ROWS = pd.DataFrame({"premise": ["a cat sat", "it rained"], "hypothesis": ["a cat", "wet"], "label": [0, 1]})


def build_rows(folder: Path) -> int:
    return write_parquet(ROWS, folder / "raw.parquet")


def refuse(folder: Path) -> int:
    raise AssertionError("built again, though the store holds it")


def on_machine(monkeypatch, tmp_path: Path, name: str) -> Path:
    """Another machine: its own cache (the store's mirror), the same store URL."""
    cache = tmp_path / name
    monkeypatch.setenv(remote.CACHE_ENV, str(cache))
    return cache


def test_an_artifact_built_on_one_machine_is_served_on_another_and_read_where_it_lies(store_url, tmp_path, monkeypatch):
    on_machine(monkeypatch, tmp_path, "a")
    built = materialize(store_url, "raw", 1, {"n": 2}, [], build_rows)
    on_machine(monkeypatch, tmp_path, "b")
    served = materialize(store_url, "raw", 1, {"n": 2}, [], refuse)
    assert served.cached and served.key == built.key and served.folder != built.folder
    pd.testing.assert_frame_equal(pd.read_parquet(served.folder / "raw.parquet"), ROWS)
    # the store holds the local layout: pandas (and DuckDB, polars) read its Parquet where it lies
    where = f"{store_url}/artifacts/raw/{built.key}/raw.parquet"
    pd.testing.assert_frame_equal(pd.read_parquet(where), ROWS)


def test_files_without_their_manifest_are_no_artifact_and_a_damaged_file_is_never_trusted(
    store_url, tmp_path, monkeypatch, caplog
):
    on_machine(monkeypatch, tmp_path, "a")
    built = materialize(store_url, "raw", 1, {"n": 2}, [], build_rows)
    store = remote.store_of(store_url)
    prefix = f"{store.root}/artifacts/raw/{built.key}"
    store.fs.rm_file(f"{prefix}/manifest.json")  # as a killed upload leaves it: files, no manifest
    calls = []
    on_machine(monkeypatch, tmp_path, "b")
    again = materialize(store_url, "raw", 1, {"n": 2}, [], lambda f: calls.append(f) or build_rows(f))
    assert len(calls) == 1 and not again.cached and store.fs.exists(f"{prefix}/manifest.json")

    store.fs.pipe_file(f"{prefix}/raw.parquet", b"x" * store.fs.size(f"{prefix}/raw.parquet"))  # same size
    on_machine(monkeypatch, tmp_path, "c")
    with caplog.at_level(logging.WARNING):
        rebuilt = materialize(store_url, "raw", 1, {"n": 2}, [], lambda f: calls.append(f) or build_rows(f))
    assert len(calls) == 2 and not rebuilt.cached
    assert "differ from the manifest in the store" in caplog.text
    on_machine(monkeypatch, tmp_path, "d")  # the rebuild replaced the damaged copy in the store
    assert materialize(store_url, "raw", 1, {"n": 2}, [], refuse).cached


def test_the_store_losing_an_artifact_a_mirror_holds_gets_it_back(store_url, tmp_path, monkeypatch):
    on_machine(monkeypatch, tmp_path, "a")
    built = materialize(store_url, "raw", 1, {"n": 2}, [], build_rows)
    store = remote.store_of(store_url)
    store.fs.rm(f"{store.root}/artifacts/raw/{built.key}", recursive=True)
    assert find(store_url, "raw", built.key) is not None  # the mirror's copy, checked, uploaded again
    on_machine(monkeypatch, tmp_path, "b")
    assert materialize(store_url, "raw", 1, {"n": 2}, [], refuse).cached


CHILD = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    import pandas as pd
    from tasks.store.artifacts import materialize, write_parquet
    def build(folder):
        Path(sys.argv[2]).write_text("building")
        time.sleep(600)
    materialize(sys.argv[1], "raw", 1, {"n": 2}, [], build)
    """
)


def test_a_killed_lease_holder_is_taken_over_within_about_one_ttl(store_url, tmp_path, monkeypatch, caplog):
    ttl = 3.0
    monkeypatch.setenv("TRAIN_EMBEDDINGS_LEASE_TTL", str(ttl))
    marker = tmp_path / "building"
    env = os.environ | {remote.CACHE_ENV: str(tmp_path / "holder")}
    holder = subprocess.Popen([sys.executable, "-c", CHILD, store_url, str(marker)], cwd=PROJECT, env=env)
    try:
        deadline = time.monotonic() + 60
        while not marker.exists():
            assert holder.poll() is None and time.monotonic() < deadline, "the holder never started building"
            time.sleep(0.1)
        os.kill(holder.pid, signal.SIGKILL)
        holder.wait()
        on_machine(monkeypatch, tmp_path, "taker")
        started = time.monotonic()
        with caplog.at_level(logging.WARNING):
            taken = materialize(store_url, "raw", 1, {"n": 2}, [], build_rows)
        waited = time.monotonic() - started
    finally:
        holder.kill()
    assert ttl <= waited < 2.5 * ttl + 5  # a whole ttl unchanged, measured here; then it builds
    assert f"pid {holder.pid}" in caplog.text and "took over" in caplog.text  # who held it
    reference = tmp_path / "reference"
    reference.mkdir()
    build_rows(reference)
    assert _sha(taken.folder / "raw.parquet") == _sha(reference / "raw.parquet")  # the same artifact


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_two_builds_of_one_key_on_two_machines_compute_it_once(store_url, tmp_path, monkeypatch):
    env = os.environ | {remote.CACHE_ENV: str(tmp_path / "other")}
    script = textwrap.dedent(
        """
        import sys, time
        from pathlib import Path
        import pandas as pd
        from tasks.store.artifacts import materialize, write_parquet
        def build(folder):
            with open(sys.argv[2], "a") as calls:
                calls.write("built\\n")
            time.sleep(3)
            return write_parquet(pd.DataFrame({"a": [1]}), folder / "raw.parquet")
        print(materialize(sys.argv[1], "raw", 1, {"race": 1}, [], build).cached)
        """
    )
    calls = tmp_path / "calls"
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", script, store_url, str(calls)],
            cwd=PROJECT,
            stdout=subprocess.PIPE,
            env=env | {remote.CACHE_ENV: str(tmp_path / f"machine-{i}")},
            text=True,
        )  # fmt: skip
        for i in range(2)
    ]
    outputs = sorted(p.communicate(timeout=120)[0].strip() for p in procs)
    assert [p.returncode for p in procs] == [0, 0]
    assert outputs == ["False", "True"] and calls.read_text() == "built\n"


def _record(key: str, score: float) -> dict:
    return {"model_key": key, "model_path": f"/models/{key}/model", "metric": "m", "score": score}


def test_the_champion_is_a_compare_and_swap_across_machines(store_url, tmp_path, monkeypatch):
    on_machine(monkeypatch, tmp_path, "a")
    with champion_lock(store_url, "champion"):
        assert read_champion(store_url) is None
        # meanwhile another machine promotes its model
        contextvars.Context().run(lambda: _promote_elsewhere(store_url, monkeypatch, tmp_path))
        with pytest.raises(ChampionChanged, match="another run changed the champion"):
            write_champion(store_url, "champion", _record("mine", 0.9))
    on_machine(monkeypatch, tmp_path, "c")
    assert read_champion(store_url)["model_key"] == "theirs"


def _promote_elsewhere(store_url: str, monkeypatch, tmp_path: Path, key: str = "theirs", score: float = 0.5) -> None:
    cache = os.environ[remote.CACHE_ENV]
    os.environ[remote.CACHE_ENV] = str(tmp_path / "elsewhere")
    try:
        with champion_lock(store_url, "champion"):
            read_champion(store_url)
            write_champion(store_url, "champion", _record(key, score))
    finally:
        os.environ[remote.CACHE_ENV] = cache


def test_a_promotion_that_loses_the_swap_compares_again_with_the_new_champion(store_url, tmp_path, monkeypatch):
    """Two machines finish together: the one whose write lands second compares with the first's champion."""
    on_machine(monkeypatch, tmp_path, "a")
    decide = promotion.decide
    raced = []

    def decide_while_another_machine_promotes(current, *args, **kwargs):
        if not raced:  # the other machine's promotion lands between this one's read and its write
            raced.append(True)
            contextvars.Context().run(lambda: _promote_elsewhere(store_url, monkeypatch, tmp_path, "theirs", 0.7))
        return decide(current, *args, **kwargs)

    monkeypatch.setattr(promotion, "decide", decide_while_another_machine_promotes)
    model = materialize(store_url, "models", 1, {"m": 1}, [], build_rows)
    outcome = promotion.challenge(store_url, model, {"m": 0.6}, "m", {}, None, min_gain=0.003)
    assert outcome.decision["champion_before"] == {"model_key": "theirs", "score": 0.7}
    assert not outcome.decision["promoted"] and read_champion(store_url)["model_key"] == "theirs"


def test_a_store_stopped_mid_upload_leaves_no_half_artifact_and_names_the_store(
    private_object_store, tmp_path, monkeypatch
):
    point_env_at(private_object_store, monkeypatch, tmp_path)
    monkeypatch.setenv("TRAIN_EMBEDDINGS_LEASE_TTL", "2")
    url = f"s3://{private_object_store.make_bucket('mid-upload')}/store"
    store = remote.store_of(url)
    real_put_file = store.fs.put_file

    def stop_then_put(lpath, rpath, **kwargs):  # the files went up; the store goes down before the manifest
        if rpath.endswith("/manifest.json"):
            private_object_store.stop()
        return real_put_file(lpath, rpath, **kwargs)

    monkeypatch.setattr(store.fs, "put_file", stop_then_put)
    with pytest.raises(remote.StoreError, match=r"the store s3://mid-upload/store: uploading .*raw/"):
        materialize(url, "raw", 1, {"n": 2}, [], build_rows)
    monkeypatch.undo()
    point_env_at(private_object_store, monkeypatch, tmp_path)
    monkeypatch.setenv("TRAIN_EMBEDDINGS_LEASE_TTL", "2")  # the build lease it could not delete runs out
    private_object_store.start()
    uploaded = store.fs.find(f"{store.root}/artifacts/raw")
    assert uploaded and not [p for p in uploaded if p.endswith("manifest.json")]  # files, never an artifact
    on_machine(monkeypatch, tmp_path, "b")
    calls = []
    assert not materialize(url, "raw", 1, {"n": 2}, [], lambda f: calls.append(f) or build_rows(f)).cached
    assert calls


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("ftp://bucket/x", "the scheme 'ftp' is not one of"),
        ("s3:///prefix", "names no bucket"),
        ("s3://AKIAEXAMPLE:hunter2@bucket/x", "credentials do not go in the URL"),
        ("s3x://AKIAEXAMPLE:hunter2@bucket/x", "credentials do not go in the URL"),
        ("s3://bucket/x?X-Amz-Credential=hunter2", "takes no query"),
        ("s3://no-such-bucket-here/x", "the bucket does not exist"),
    ],
)
def test_a_bad_url_or_a_missing_bucket_is_refused_naming_data_dir(store_url, url, message):
    with pytest.raises(ValueError, match=message) as caught:
        remote.check(url)
    assert str(caught.value).startswith("parameter data_dir") and "hunter2" not in str(caught.value)


def test_no_credentials_or_wrong_ones_are_refused_before_anything(store_url, monkeypatch, tmp_path):
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "not-the-secret")
    with pytest.raises(ValueError, match="access denied"):
        remote.check(store_url)
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    with pytest.raises(ValueError, match="no credentials found"):
        remote.check(store_url)


def test_a_data_dir_inside_the_flow_runs_temporary_folder_is_warned_of(tmp_path, monkeypatch):
    import tempfile

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    run = tmp_path / "tmpab12cdprefect"
    (run / "clone").mkdir(parents=True)
    monkeypatch.chdir(run / "clone")
    warning = ephemeral_warning("data")
    assert warning is not None and str(run) in warning and "TRAIN_EMBEDDINGS_STORE=s3://" in warning
    assert ephemeral_warning(str(tmp_path / "elsewhere")) is None
    assert ephemeral_warning("s3://bucket/prefix") is None


def test_run_records_and_push_records_are_in_the_store(store_url, tmp_path, monkeypatch):
    from tasks.shipping.publish import read_pushed, record_pushed
    from tasks.store.runs import run_records, runs_folder

    on_machine(monkeypatch, tmp_path, "a")
    runs_folder(store_url).mkdir(parents=True)
    record = runs_folder(store_url) / "20261201T000000000000Z.json"
    record.write_text(json.dumps({"parameters": {}}))
    transfer.push_files([record])
    record_pushed(store_url, "org/model", {"model_key": "k"})
    on_machine(monkeypatch, tmp_path, "b")
    assert [p.name for p in run_records(store_url)] == [record.name]
    assert read_pushed(store_url, "org/model") == {"model_key": "k"}


def test_the_embedding_cache_is_shared_through_the_store_shard_by_shard(store_url, tmp_path, monkeypatch, tiny_bert):
    import numpy as np

    from tasks.models.resolve import resolve_model
    from tasks.negatives.embeddings import encode_cached

    model = resolve_model(str(tiny_bert))
    on_machine(monkeypatch, tmp_path, "a")
    first, encoded = encode_cached(store_url, model, ["a cat", "a dog"])
    assert encoded == 2
    store = remote.store_of(store_url)
    shards = store.fs.glob(f"{store.root}/artifacts/embeddings/*/shard-*")
    assert sorted(name.rsplit(".", 1)[-1] for name in shards) == ["parquet", "sha256"]  # each with its checksum
    on_machine(monkeypatch, tmp_path, "b")
    again, encoded = encode_cached(store_url, model, ["a dog", "a cat", "a bird"])
    assert encoded == 1  # only the text no machine has encoded yet
    np.testing.assert_array_equal(again[:2], first[[1, 0]])


TAKER = textwrap.dedent(
    """
    import sys
    import pandas as pd
    from tasks.store.artifacts import materialize, write_parquet
    build = lambda folder: write_parquet(pd.DataFrame({"built_by": ["taker"]}), folder / "raw.parquet")
    print(materialize(sys.argv[1], "raw", 1, {"n": 2}, [], build).cached)
    """
)


def test_a_build_whose_lease_lapsed_adopts_what_the_taker_published(store_url, tmp_path, monkeypatch, caplog):
    """A holder stuck past its ttl (its renewals stopped) is taken over; before publishing it takes the lease again
    and adopts the taker's copy, never mixing two builds' files under one manifest."""
    from tasks.store import object_locks, transfer
    from tasks.store.artifacts import artifact_key, artifacts_root
    from tasks.store.locks import lock_path
    from tasks.store.manifests import file_entries

    monkeypatch.setenv("TRAIN_EMBEDDINGS_LEASE_TTL", "2")
    on_machine(monkeypatch, tmp_path, "stuck")
    store = remote.store_of(store_url)
    final = artifacts_root(store_url) / "raw" / artifact_key("raw", 1, {"n": 2}, [])
    lease = object_locks.ObjectLease(store, store.remote(lock_path(final)), object_locks.holder_facts())
    lease.acquire(10, "the build")
    lease._stop.set()  # its renewals stop, as a holder stuck on a store that stopped answering
    taker = subprocess.run([sys.executable, "-c", TAKER, store_url], cwd=PROJECT, capture_output=True, text=True,
                           env=os.environ | {remote.CACHE_ENV: str(tmp_path / "taker")}, timeout=120)  # fmt: skip
    assert taker.returncode == 0 and taker.stdout.strip() == "False", taker.stderr[-2000:]
    final.mkdir(parents=True)  # what the stuck holder built meanwhile: other bytes, one key
    write_parquet(pd.DataFrame({"built_by": ["stuck"]}), final / "raw.parquet")
    manifest = {"stage": "raw", "key": final.name, "parents": [], "rows": 1, "files": file_entries(final)}
    (final / "manifest.json").write_text(json.dumps(manifest))
    with caplog.at_level(logging.WARNING):
        assert transfer.share(final, lease, 30)  # adopted
    lease.release()
    assert pd.read_parquet(final / "raw.parquet")["built_by"].tolist() == ["taker"]
    assert "went unrenewed" in caplog.text
    on_machine(monkeypatch, tmp_path, "third")
    assert pd.read_parquet(materialize(store_url, "raw", 1, {"n": 2}, [], refuse).folder / "raw.parquet").equals(
        pd.read_parquet(final / "raw.parquet")
    )
