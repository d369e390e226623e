"""`train-embeddings gc --keep-runs 0 --min-age-hours 0` in a loop beside a real flow run: the run ends with
every artifact intact, and once it has ended the same gc removes what nothing keeps (the lease really ends)."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest
from prefect.testing.utilities import prefect_test_harness

from flows import train_embeddings as flow_module
from tasks.store import cleanup, leases
from tasks.store.artifacts import artifacts_root, find, read_manifest, verify

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parent.parent

# What `train-embeddings gc --keep-runs 0 --min-age-hours 0` does (flows/cli.py), over and over, in its own process
GC_LOOP = """
import sys, time, traceback
from pathlib import Path
from tasks.store import cleanup
data, stop, log = Path(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3])
while not stop.exists():
    try:
        stale = cleanup.unreferenced(data, keep_runs=0, min_age_hours=0)
        cleanup.remove(stale)
        lines = [f"removed {p}" for p in stale] + ["round"]
    except Exception:
        lines = ["error " + traceback.format_exc().replace(chr(10), " | ")]
    with open(log, "a") as handle:
        handle.writelines(line + chr(10) for line in lines)
    time.sleep(0.02)
"""


@pytest.fixture(scope="module")
def prefect_api():
    with prefect_test_harness(server_startup_timeout=120):
        yield


def _intact(refs: dict) -> list[str]:
    """What is wrong with the run's artifacts: gone, damaged, or holding a file its manifest does not list."""
    wrong = []
    for name, ref in refs.items():
        folder = Path(ref.path)
        if find(folder.parent.parent.parent, ref.stage, ref.key) is None or verify(ref):
            wrong.append(f"{name}: {folder} missing or damaged")
            continue
        held = {str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file()} - {"manifest.json"}
        if held != set(read_manifest(folder)["files"]):
            wrong.append(f"{name}: {folder} holds files its manifest does not list")
    return wrong


def test_gc_in_a_loop_never_touches_a_live_run_and_the_lease_ends_with_it(
    prefect_api, tiny_bert, nli_sample, tmp_path, monkeypatch
):
    source, data = tmp_path / "nli.parquet", tmp_path / "data"
    nli_sample[["premise", "hypothesis", "label"]].to_parquet(source)
    stop, log = tmp_path / "stop", tmp_path / "gc.log"
    checked: list[list[str]] = []
    write = flow_module.write_run_record

    def checking(data_dir, record):  # the run's last step: every artifact it holds must be intact now
        checked.append(_intact(record.artifacts.named()))
        return write(data_dir, record)

    monkeypatch.setattr(flow_module, "write_run_record", checking)
    loop = subprocess.Popen([sys.executable, "-c", GC_LOOP, str(data), str(stop), str(log)], cwd=ROOT)
    try:
        summary = flow_module.train_embeddings(
            loss="mnr", negatives="semi-hard", nli_source=str(source), max_pairs=240, base_model=str(tiny_bert),
            epochs=1, batch_size=16, warmup_steps=1, eval_steps=2, max_steps=3, eval_limit=100, data_dir=str(data),
        )  # fmt: skip
        assert checked == [[]]
        rounds = log.read_text().count("round\n")
        assert rounds > 20, f"gc ran only {rounds} rounds beside the run"
        # the run is over: the same loop now removes what no record (keep_runs=0) nor the champion keeps
        unkept = [summary["artifacts"][name]["path"] for name in ("base-metrics", "trained-metrics", "report")]
        unkept.append(summary["artifacts"]["release"]["path"])
        deadline = time.monotonic() + 60
        while any(Path(p).exists() for p in unkept) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not [p for p in unkept if Path(p).exists()]
    finally:
        stop.touch()
        loop.wait(timeout=60)
    assert not [line for line in log.read_text().splitlines() if line.startswith("error")]
    assert list(leases.live_folder(artifacts_root(data)).glob(f"*{leases.SUFFIX}")) == []
    # the champion's model and what it was made from stay
    assert cleanup.unreferenced(data, keep_runs=0, min_age_hours=0) == []
    assert Path(summary["artifacts"]["model"]["path"]).is_dir()


def test_a_nested_flow_joins_the_lease_of_the_flow_around_it(prefect_api, tmp_path):
    """As compare-losses calls train-embeddings per cell: what a cell made stays until the grid is done."""
    from prefect import flow, task

    from tasks.store.artifacts import materialize

    @task
    def make(data_dir: str, cell: str):
        def build(folder: Path) -> int:
            (folder / "cell.txt").write_text(cell)
            return 1

        return materialize(data_dir, "metrics", 1, {"cell": cell}, [], build)

    @leases.leased(flow(name="cell"))
    def cell(cell: str, data_dir: str = "data"):
        return make.submit(data_dir, cell).result(), len(_leases(data_dir))

    @leases.leased(flow(name="grid"))
    def grid(data_dir: str = "data"):
        first, held = cell("a", data_dir=data_dir)
        assert cleanup.unreferenced(data_dir, keep_runs=0, min_age_hours=0) == []  # the first cell's, kept
        second, _ = cell("b", data_dir=data_dir)
        return first, second, held

    def _leases(data_dir: str) -> list[Path]:
        return list(leases.live_folder(artifacts_root(data_dir)).glob(f"*{leases.SUFFIX}"))

    first, second, held = grid(data_dir=str(tmp_path))
    assert held == 1 and _leases(str(tmp_path)) == []  # one lease, the grid's, ended with it
    assert {p.name for p in cleanup.unreferenced(tmp_path, keep_runs=0, min_age_hours=0)} == {first.key, second.key}
