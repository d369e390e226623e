"""Keys, atomic builds, manifests, and recovery from damaged artifacts."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from tasks.store.artifacts import ArtifactRef, artifact_key, find, list_artifacts, materialize, verify, write_parquet

FRAME = pd.DataFrame({"a": [1, 2, 3], "b": ["x", "y", "z"]})


def _build(calls: list):
    def build(folder):
        calls.append(folder)
        return write_parquet(FRAME, folder / "data.parquet")

    return build


def test_key_depends_on_stage_version_params_and_parents():
    parent = ArtifactRef("raw", "k1", "/x")
    base = artifact_key("pairs", 1, {"loss": "mnr"}, [parent])
    assert base == artifact_key("pairs", 1, {"loss": "mnr"}, [ArtifactRef("raw", "k1", "/elsewhere")])
    assert base != artifact_key("pairs", 2, {"loss": "mnr"}, [parent])
    assert base != artifact_key("pairs", 1, {"loss": "cosine"}, [parent])
    assert base != artifact_key("pairs", 1, {"loss": "mnr"}, [ArtifactRef("raw", "k2", "/x")])
    assert base != artifact_key("triplets", 1, {"loss": "mnr"}, [parent])


def test_second_materialize_is_served_from_the_store(tmp_path):
    calls: list = []
    first = materialize(tmp_path, "pairs", 1, {"p": 1}, [], _build(calls))
    second = materialize(tmp_path, "pairs", 1, {"p": 1}, [], _build(calls))
    assert (first.cached, second.cached) == (False, True)
    assert len(calls) == 1
    assert first.path == second.path and first.rows == second.rows == 3


def test_manifest_records_params_parents_schema_and_checksums(tmp_path):
    parent = materialize(tmp_path, "raw", 1, {}, [], _build([]))
    ref = materialize(tmp_path, "pairs", 1, {"loss": "mnr"}, [parent], _build([]), facts={"note": "hi"})
    manifest = json.loads((ref.folder / "manifest.json").read_text())
    assert manifest["params"] == {"loss": "mnr"}
    assert manifest["parents"][0]["key"] == parent.key
    assert manifest["rows"] == 3
    schema = manifest["schema"]["data.parquet"]
    assert schema["a"] == "int64" and schema["b"] in ("string", "large_string")
    assert len(manifest["files"]["data.parquet"]["sha256"]) == 64
    assert manifest["note"] == "hi"
    assert verify(ref) == []
    assert {row["key"] for row in list_artifacts(tmp_path)} == {parent.key, ref.key}


def test_a_failed_build_leaves_nothing_and_keeps_earlier_artifacts(tmp_path):
    earlier = materialize(tmp_path, "pairs", 1, {"p": 1}, [], _build([]))

    def failing(folder):
        write_parquet(FRAME, folder / "data.parquet")
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        materialize(tmp_path, "pairs", 1, {"p": 2}, [], failing)
    stage_dir = tmp_path / "artifacts" / "pairs"
    assert sorted(p.name for p in stage_dir.iterdir()) == [earlier.key]
    assert list((tmp_path / "artifacts" / ".staging" / "pairs").iterdir()) == []  # its staging folder went too
    assert verify(earlier) == []


def test_deleted_or_truncated_files_are_rebuilt(tmp_path):
    calls: list = []
    ref = materialize(tmp_path, "pairs", 1, {}, [], _build(calls))
    (ref.folder / "data.parquet").write_bytes(b"trunc")
    assert find(tmp_path, "pairs", ref.key) is None
    again = materialize(tmp_path, "pairs", 1, {}, [], _build(calls))
    assert not again.cached and len(calls) == 2
    assert pd.read_parquet(again.folder / "data.parquet").equals(FRAME)
    (again.folder / "data.parquet").unlink()
    assert not materialize(tmp_path, "pairs", 1, {}, [], _build(calls)).cached


def test_checksum_mismatch_is_reported(tmp_path):
    ref = materialize(tmp_path, "pairs", 1, {}, [], _build([]))
    data = (ref.folder / "data.parquet").read_bytes()
    (ref.folder / "data.parquet").write_bytes(data[:-1] + bytes([data[-1] ^ 1]))
    assert verify(ref) == ["data.parquet"]


def _slow_build(folder):
    import time

    time.sleep(0.5)
    return write_parquet(FRAME, folder / "data.parquet")


def _materialize_in_child(data_dir, queue):
    ref = materialize(data_dir, "pairs", 1, {"same": True}, [], _slow_build)
    queue.put(ref.path)


def test_concurrent_builds_of_one_key_agree_and_never_expose_partial_output(tmp_path):
    import multiprocessing as mp
    import time

    ctx = mp.get_context("fork")
    queue = ctx.Queue()
    workers = [ctx.Process(target=_materialize_in_child, args=(tmp_path, queue)) for _ in range(2)]
    for worker in workers:
        worker.start()
    stage = tmp_path / "artifacts" / "pairs"
    deadline = time.monotonic() + 30
    while any(w.is_alive() for w in workers) and time.monotonic() < deadline:
        for folder in stage.glob("*/") if stage.exists() else []:
            # every folder a glob of the stage sees is a complete artifact: manifest and data together
            assert (folder / "manifest.json").exists() and (folder / "data.parquet").exists()
        time.sleep(0.01)
    for worker in workers:
        worker.join()
        assert worker.exitcode == 0
    paths = {queue.get(), queue.get()}
    assert len(paths) == 1
    assert [p.name for p in stage.iterdir()] == [Path(paths.pop()).name]
    ref = find(tmp_path, "pairs", artifact_key("pairs", 1, {"same": True}, []))
    assert ref is not None and verify(ref) == []


def test_a_damaged_artifact_is_named_in_a_warning(tmp_path, caplog):
    ref = materialize(tmp_path, "pairs", 1, {}, [], _build([]))
    (ref.folder / "data.parquet").write_bytes(b"x" * (ref.folder / "data.parquet").stat().st_size)
    with caplog.at_level("WARNING"):
        assert find(tmp_path, "pairs", ref.key) is None
    assert str(ref.folder) in caplog.text and "damaged" in caplog.text


def test_manifests_record_the_environment_and_a_reuse_across_versions_says_so(tmp_path, caplog):
    import torch

    from tasks.store import environment

    ref = materialize(tmp_path, "pairs", 1, {"p": 1}, [], _build([]))
    again = materialize(tmp_path / "other", "pairs", 1, {"p": 1}, [], _build([]))
    recorded = json.loads((ref.folder / "manifest.json").read_text())["environment"]
    assert recorded == json.loads((again.folder / "manifest.json").read_text())["environment"]  # same machine
    assert recorded["libraries"]["torch"].startswith(torch.__version__.split("+")[0])
    assert recorded["libraries"]["sentence-transformers"] and recorded["libraries"]["faiss"]
    assert recorded["device"]["name"] == "cpu"
    assert len(recorded["git"]["commit"]) == 40 and isinstance(recorded["git"]["dirty"], bool)

    with caplog.at_level("WARNING"):
        materialize(tmp_path, "pairs", 1, {"p": 1}, [], _build([]))
    assert "other library versions" not in caplog.text  # same versions: reused quietly

    manifest_path = ref.folder / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    manifest["environment"]["libraries"]["transformers"] = "4.0.0"
    manifest_path.write_text(json.dumps(manifest))
    assert environment.differences(manifest["environment"]) == {
        "transformers": ("4.0.0", recorded["libraries"]["transformers"])
    }
    with caplog.at_level("WARNING"):
        reused = materialize(tmp_path, "pairs", 1, {"p": 1}, [], _build([]))
    assert reused.cached and f"transformers 4.0.0 -> {recorded['libraries']['transformers']}" in caplog.text


def _counted_build(calls: Path, seconds: float, fail: bool):
    """A build that notes each run in ``calls``, takes ``seconds``, and fails if asked."""

    def build(folder):
        import os
        import time

        with open(calls, "a") as handle:
            handle.write(f"{os.getpid()}\n")
        time.sleep(seconds)
        if fail:
            raise RuntimeError("the first run failed")
        return write_parquet(FRAME, folder / "data.parquet")

    return build


def _materialize_counted(data_dir, calls, seconds, fail, queue):
    try:
        queue.put(materialize(data_dir, "pairs", 1, {"same": True}, [], _counted_build(calls, seconds, fail)))
    except RuntimeError as exc:
        queue.put(str(exc))


def _start_building(tmp_path: Path, seconds: float, fail: bool = False):
    """A child process that has started building pairs/{same: True}: the other run."""
    import multiprocessing as mp
    import time

    ctx = mp.get_context("fork")
    queue = ctx.Queue()
    calls = tmp_path / "calls"
    child = ctx.Process(target=_materialize_counted, args=(tmp_path, calls, seconds, fail, queue))
    child.start()
    deadline = time.monotonic() + 30
    while not calls.exists() and time.monotonic() < deadline:
        time.sleep(0.01)
    assert calls.exists(), "the child never started building"
    return child, queue, calls


KEY = artifact_key("pairs", 1, {"same": True}, [])


def test_a_second_run_waits_for_the_one_building_the_key_and_reuses_its_artifact(tmp_path, caplog):
    child, queue, calls = _start_building(tmp_path, seconds=2.0)
    with caplog.at_level("INFO", logger="tasks.store.artifacts"):
        mine = materialize(tmp_path, "pairs", 1, {"same": True}, [], _counted_build(calls, 2.0, False))
    theirs = queue.get(timeout=30)
    child.join()
    assert len(calls.read_text().splitlines()) == 1  # one computation
    assert mine == theirs and (theirs.cached, mine.cached) == (False, True)
    stage, staging = tmp_path / "artifacts" / "pairs", tmp_path / "artifacts" / ".staging" / "pairs"
    assert f"{staging}/.tmp-{KEY}-" in caplog.text and f".partial-{KEY}.lock" in caplog.text  # names the other run
    assert [p.name for p in stage.iterdir()] == [KEY]  # no lock file left behind
    assert list(staging.iterdir()) == []  # nor any staging folder


def test_waiting_past_the_timeout_names_the_other_runs_folder_and_the_lock(tmp_path):
    child, queue, calls = _start_building(tmp_path, seconds=1.5)
    stage, staging = tmp_path / "artifacts" / "pairs", tmp_path / "artifacts" / ".staging" / "pairs"
    with pytest.raises(TimeoutError) as raised:
        materialize(tmp_path, "pairs", 1, {"same": True}, [], _counted_build(calls, 0, False), wait_seconds=0.2)
    assert f"{staging}/.tmp-{KEY}-" in str(raised.value) and str(stage / f".partial-{KEY}.lock") in str(raised.value)
    assert not queue.get(timeout=30).cached
    child.join()
    assert len(calls.read_text().splitlines()) == 1


def test_a_run_that_waited_for_a_failed_one_builds_itself(tmp_path):
    child, queue, calls = _start_building(tmp_path, seconds=1.0, fail=True)
    mine = materialize(tmp_path, "pairs", 1, {"same": True}, [], _counted_build(calls, 0, False))
    assert queue.get(timeout=30) == "the first run failed"
    child.join()
    assert len(calls.read_text().splitlines()) == 2
    assert not mine.cached and verify(mine) == []


def test_a_resumable_build_resumes_in_its_partial_folder_and_leaves_no_lock(tmp_path):
    seen: list = []

    def failing(folder):
        (folder / "checkpoint").write_text("step 10")
        raise RuntimeError("killed")

    def resuming(folder):
        seen.append((folder.name, (folder / "checkpoint").read_text()))
        return write_parquet(FRAME, folder / "data.parquet")

    with pytest.raises(RuntimeError, match="killed"):
        materialize(tmp_path, "models", 1, {}, [], failing, resumable=True)
    key = artifact_key("models", 1, {}, [])
    stage, staging = tmp_path / "artifacts" / "models", tmp_path / "artifacts" / ".staging" / "models"
    assert list(stage.iterdir()) == []  # the lock went with its holder; a glob of the stage sees nothing
    assert sorted(p.name for p in staging.iterdir()) == [f".partial-{key}"]
    ref = materialize(tmp_path, "models", 1, {}, [], resuming, resumable=True)
    assert seen == [(f".partial-{key}", "step 10")] and not ref.cached
    assert sorted(p.name for p in stage.iterdir()) == [key] and list(staging.iterdir()) == []


def test_a_partial_left_beside_its_key_by_an_earlier_version_is_resumed_from(tmp_path):
    """Before .staging/, a resumable build kept ``.partial-<key>`` in the stage's folder: it is resumed, not lost."""
    key = artifact_key("models", 1, {}, [])
    old = tmp_path / "artifacts" / "models" / f".partial-{key}"
    old.mkdir(parents=True)
    (old / "checkpoint").write_text("step 10")

    def resuming(folder):
        assert (folder / "checkpoint").read_text() == "step 10"
        return write_parquet(FRAME, folder / "data.parquet")

    ref = materialize(tmp_path, "models", 1, {}, [], resuming, resumable=True)
    assert not old.exists() and sorted(p.name for p in ref.folder.parent.iterdir()) == [key]


def test_a_reused_artifact_counts_as_used_now(tmp_path):
    import os

    ref = materialize(tmp_path, "pairs", 1, {}, [], _build([]))
    os.utime(ref.folder, (1e9, 1e9))
    assert materialize(tmp_path, "pairs", 1, {}, [], _build([])).cached
    assert ref.folder.stat().st_mtime > 1e9 + 1


def test_a_stage_folder_on_another_filesystem_fails_the_build_loudly_and_keeps_it(tmp_path, monkeypatch):
    """.staging/ and the stage's folder must share a filesystem (the rename into place is atomic); a stage folder
    linked to another disk fails the build, naming both, and a resumable build is kept to resume from."""
    import errno
    import os

    rename = os.rename

    def across_disks(src, dst):
        if ".staging" in str(src) and ".staging" not in str(dst):
            raise OSError(errno.EXDEV, "Invalid cross-device link")
        return rename(src, dst)

    monkeypatch.setattr(os, "rename", across_disks)
    with pytest.raises(OSError, match="not on one filesystem"):
        materialize(tmp_path, "models", 1, {}, [], _build([]), resumable=True)
    key = artifact_key("models", 1, {}, [])
    assert (tmp_path / "artifacts" / ".staging" / "models" / f".partial-{key}" / "data.parquet").is_file()
    assert find(tmp_path, "models", key) is None
