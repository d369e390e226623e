"""Run leases: what a live run has produced, reused or will read survives gc whatever its age; gc's own window
between listing and removing is closed; a dead run's lease lets go."""

from __future__ import annotations

import contextvars
import json
import multiprocessing as mp
import subprocess
import sys
import threading
import time
import traceback
from pathlib import Path

from tasks.store import cleanup, leases
from tasks.store.artifacts import ArtifactRef, artifacts_root, find, materialize, verify


def _artifact(data: Path, stage: str, params: dict, parents: list[ArtifactRef] = (), facts: dict | None = None):
    def build(folder: Path) -> int:
        (folder / "data.txt").write_text(stage)
        return 1

    return materialize(data, stage, 1, params, list(parents), build, facts=facts)


def _gc(data: Path) -> list[Path]:
    """What `train-embeddings gc --keep-runs 0 --min-age-hours 0` does."""
    stale = cleanup.unreferenced(data, keep_runs=0, min_age_hours=0)
    cleanup.remove(stale)
    return stale


def _live(data: Path) -> list[Path]:
    return sorted(leases.live_folder(artifacts_root(data)).glob(f"*{leases.SUFFIX}"))


def test_a_held_lease_keeps_what_it_names_and_its_inputs_whatever_their_age(tmp_path):
    raw = _artifact(tmp_path, "raw", {})
    model = _artifact(tmp_path, "models", {"m": 1}, [raw])
    store = artifacts_root(tmp_path) / "embeddings" / "cafe-bf16"
    store.mkdir(parents=True)
    with leases.held(tmp_path):
        trained = {"name": "m", "location": str(model.folder / "model"), "source": "local", "fingerprint": "f"}
        metrics = _artifact(tmp_path, "metrics", {"miner": "cafe"}, [], facts={"model": trained})  # as asdict(...)
        assert _gc(tmp_path) == []  # metrics, the model it names by location, its parent raw, the miner's store
        assert find(tmp_path, "metrics", metrics.key) and find(tmp_path, "raw", raw.key) and store.is_dir()
    assert _live(tmp_path) == []  # the lease ended with the block
    gone = {p.name for p in _gc(tmp_path)}
    assert {metrics.key, model.key, raw.key, "cafe-bf16"} <= gone and not store.exists()


def test_gc_listing_then_a_run_reusing_the_artifact_keeps_it(tmp_path):
    """gc lists, a run reuses an artifact meanwhile, gc removes: the removal looks again, under gc's lock."""
    raw = _artifact(tmp_path, "raw", {})
    pairs = _artifact(tmp_path, "pairs", {}, [raw])
    store = artifacts_root(tmp_path) / "embeddings" / "beef"
    store.mkdir(parents=True)
    listed = cleanup.unreferenced(tmp_path, keep_runs=0, min_age_hours=0)
    assert {pairs.folder, raw.folder, store} <= set(listed)
    with leases.held(tmp_path) as lease:
        assert _artifact(tmp_path, "pairs", {}, [raw]).cached  # reused after gc looked
        lease.add(leases.entry("triplets", "0" * 16, [], {"miner": "beef"}, None))  # about to mine with beef
        cleanup.remove(listed)
        assert verify(pairs) == [] and verify(raw) == [] and store.is_dir()  # raw: a parent of what it holds


def test_a_run_adding_to_its_lease_waits_while_gc_looks_and_moves(tmp_path):
    lease_added = threading.Event()
    root = artifacts_root(tmp_path)
    with leases.held(tmp_path) as lease:
        with leases.gc_lock(root, exclusive=True):
            adding = threading.Thread(target=lambda: (lease.add({"stage": "raw", "key": "k"}), lease_added.set()))
            adding.start()
            assert not lease_added.wait(0.3)  # no line goes in between gc's look and its removal
        assert lease_added.wait(10)
        adding.join()
        assert leases.held_entries(root) == [{"stage": "raw", "key": "k"}]


def _hold_and_die(data: str, ready) -> None:
    with leases.held(data) as lease:
        lease.add({"stage": "raw", "key": "k" * 16})
        ready.set()
        time.sleep(60)


def test_a_dead_runs_lease_is_ignored_and_removed(tmp_path):
    raw = _artifact(tmp_path, "raw", {})
    ctx = mp.get_context("fork")
    ready = ctx.Event()
    child = ctx.Process(target=_hold_and_die, args=(str(tmp_path), ready))
    child.start()
    try:
        assert ready.wait(30)
        [lease] = _live(tmp_path)
        assert leases.held_entries(artifacts_root(tmp_path)) == [{"stage": "raw", "key": "k" * 16}]
        assert lease not in cleanup.unreferenced(tmp_path, keep_runs=0, min_age_hours=0)
    finally:
        child.kill()
        child.join()
    assert leases.held_entries(artifacts_root(tmp_path)) == []
    stale = _gc(tmp_path)
    assert lease in stale and not lease.exists() and raw.folder in stale


def test_the_lease_reaches_task_threads_and_nested_runs_join_it(tmp_path):
    root = artifacts_root(tmp_path).resolve()
    assert leases.active(root) == []
    with leases.held(tmp_path) as lease:
        assert leases.active(root) == [lease]
        with leases.held(str(tmp_path)) as inner:  # a nested flow on the same data folder
            assert inner is lease
        seen: list = []
        look = lambda: seen.append(leases.active(root))  # noqa: E731
        copied = threading.Thread(target=contextvars.copy_context().run, args=(look,))  # as Prefect starts tasks
        bare = threading.Thread(target=look)  # started without the run's context: the process's leases
        for thread in (copied, bare):
            thread.start()
            thread.join()
        assert seen == [[lease], [lease]] and not lease.closed
        assert lease.path is None and _live(tmp_path) == []  # no file before the first artifact: nothing to clean
        _artifact(tmp_path, "raw", {})
        [path] = _live(tmp_path)
        assert json.loads(path.read_text().splitlines()[1])["stage"] == "raw"
    assert lease.closed and not path.exists() and leases.active(root) == []


def test_materialize_outside_a_run_holds_a_lease_for_the_call(tmp_path):
    raw = _artifact(tmp_path, "raw", {})
    seen: list = []

    def build(folder: Path) -> int:
        seen.append(leases.held_entries(artifacts_root(tmp_path)))
        (folder / "data.txt").write_text("x")
        return 1

    materialize(tmp_path, "pairs", 1, {"miner": "f00d"}, [raw], build)
    [[item]] = seen
    assert (item["stage"], item["miner"], item["parents"][0]["key"]) == ("pairs", "f00d", raw.key)
    assert _live(tmp_path) == []


def _materialize_in_child(data: str) -> None:
    def build(folder: Path) -> int:
        (folder / "data.txt").write_text(str(len(_live(Path(data)))))
        return 1

    try:
        materialize(data, "pairs", 1, {"child": True}, [], build)
    except BaseException:  # what went wrong in the child, for the parent's assertion
        Path(data, "child-error.txt").write_text(traceback.format_exc())
        raise


def test_a_forked_child_holds_a_lease_of_its_own(tmp_path):
    """A child outlives or outruns its parent's lease: it never writes into it. Run in a fresh interpreter,
    so that no thread or handler an earlier test left in this process is forked with it."""
    script = (
        "import sys\n"
        "from pathlib import Path\n"
        "from tests.test_leases import _forked_child_scenario\n"
        "_forked_child_scenario(Path(sys.argv[1]))\n"
    )
    root = Path(__file__).resolve().parent.parent
    done = subprocess.run([sys.executable, "-c", script, str(tmp_path)], cwd=root, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]


def _forked_child_scenario(tmp_path: Path) -> None:
    with leases.held(tmp_path) as lease:
        _artifact(tmp_path, "raw", {})
        child = mp.get_context("fork").Process(target=_materialize_in_child, args=(str(tmp_path),))
        child.start()
        child.join()
        error = tmp_path / "child-error.txt"
        assert child.exitcode == 0, error.read_text() if error.exists() else "no traceback"
        [built] = (artifacts_root(tmp_path) / "pairs").iterdir()
        assert (built / "data.txt").read_text() == "2"  # the parent's lease and the child's own
        assert [item["stage"] for item in leases.held_entries(artifacts_root(tmp_path))] == ["raw"]
        assert lease.path.exists()
