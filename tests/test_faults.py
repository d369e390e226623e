"""Fault injection: a real subprocess running the flow is killed with SIGKILL at each stage, then the
run is started again. It must complete, reuse what finished before the kill, leave no half-written
artifact, and produce data artifacts (token ids included) byte-identical to an uninterrupted run with the same seed."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests import prefect_stack as stack

pytestmark = pytest.mark.integration
PROJECT = Path(__file__).resolve().parent.parent
DATA_FILES = ("raw", "pairs", "triplets")


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("fault-server")
    env = stack.stack_env(tmp, stack.free_port(), PROJECT)
    proc = stack.start(
        ["server", "start", "--host", "127.0.0.1", "--port", env["PREFECT_SERVER_API_PORT"]], env, tmp / "server.log"
    )
    try:
        stack.wait_healthy(env["PREFECT_API_URL"], proc)
        yield env
    finally:
        stack.stop(proc)
        stack.sweep(env["PREFECT_API_URL"])


@pytest.fixture(scope="module")
def flow_args(tiny_bert, nli_sample, tmp_path_factory):
    source = tmp_path_factory.mktemp("fault-data") / "nli.parquet"
    nli_sample.head(240)[["premise", "hypothesis", "label"]].to_parquet(source)
    params = {
        "nli_source": str(source),
        "negatives": "semi-hard",
        "base_model": str(tiny_bert),
        "max_pairs": 240,
        "max_steps": 40,
        "warmup_steps": 1,
        "eval_steps": 0,
        "eval_limit": 100,
        "batch_size": 8,
        "checkpoint_steps": 10,
    }
    return [arg for name, value in params.items() for arg in ("-p", f"{name}={value}")]


def _start(env: dict, args: list[str], data_dir: Path, log: Path) -> subprocess.Popen:
    command = [sys.executable, "-m", "flows.cli", "run", *args, "-p", f"data_dir={data_dir}"]
    with open(log, "ab") as out:
        return subprocess.Popen(
            command, cwd=PROJECT, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )


def _wait_for(pattern: str, data_dir: Path, proc: subprocess.Popen, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if list((data_dir / "artifacts").glob(pattern)):
            return
        assert proc.poll() is None, f"the run ended before {pattern} appeared"
        time.sleep(0.05)
    raise TimeoutError(pattern)


def _finish(env, args, data_dir: Path, log: Path) -> dict:
    proc = _start(env, args, data_dir, log)
    assert proc.wait(timeout=900) == 0, log.read_text()[-3000:]
    return json.loads(sorted((data_dir / "artifacts" / "runs").glob("*.json"))[-1].read_text())


def _data_bytes(summary: dict) -> dict[str, bytes]:
    out = {}
    for step in ("raw", "pairs", "triplets", "tokens"):
        folder = Path(summary["artifacts"][step]["path"])
        for parquet in sorted(folder.glob("*.parquet")):
            out[f"{step}/{parquet.name}"] = parquet.read_bytes()
    return out


@pytest.fixture(scope="module")
def reference(server, flow_args, tmp_path_factory):
    data_dir = tmp_path_factory.mktemp("reference")
    return _finish(server, flow_args, data_dir, data_dir / "run.log")


# where to kill: a path under artifacts/ whose appearance marks the moment; the steps finished by then;
# the step that was running (it must be recomputed, not found half-done)
KILL_POINTS = {
    "after loading": ("raw/*/manifest.json", {"raw"}, None),  # the next step takes milliseconds
    "inside mining": (".staging/triplets/.tmp-*", {"raw", "pairs"}, "triplets"),
    "inside tokenizing": (".staging/tokens/.tmp-*", {"raw", "pairs", "triplets"}, "tokens"),
    "inside training": (
        ".staging/models/.partial-*/_trainer/checkpoint-*/checkpoint.sealed",
        {"raw", "pairs", "triplets", "tokens"},
        "model",
    ),
    "inside evaluation": (".staging/metrics/.tmp-*", {"raw", "pairs", "triplets", "tokens", "model"}, "base-metrics"),
}


@pytest.mark.parametrize("point", list(KILL_POINTS))
def test_sigkill_then_rerun_completes_reuses_and_matches(server, flow_args, reference, tmp_path, point):
    pattern, finished, running = KILL_POINTS[point]
    data_dir, log = tmp_path / "data", tmp_path / "run.log"
    proc = _start(server, flow_args, data_dir, log)
    try:
        _wait_for(pattern, data_dir, proc)
        os.killpg(proc.pid, signal.SIGKILL)
    finally:
        proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL

    # nothing half-written is visible: every folder a glob of a stage sees has its manifest (staging is elsewhere)
    for folder in (data_dir / "artifacts").glob("*/*/"):
        if folder.parent.name not in ("embeddings", "runs", "champion", ".staging"):
            assert (folder / "manifest.json").exists(), folder

    summary = _finish(server, flow_args, data_dir, log)
    cached = {step for step, ref in summary["artifacts"].items() if ref["cached"]}
    assert finished <= cached, f"finished before the kill but recomputed: {finished - cached}"
    assert running is None or running not in cached
    if point == "inside training":  # the rerun resumed from the checkpoint the kill left behind
        model_manifest = json.loads((Path(summary["artifacts"]["model"]["path"]) / "manifest.json").read_text())
        assert model_manifest["training"]["resumed_from"].startswith("checkpoint-")
    assert _data_bytes(summary) == _data_bytes(reference)
    assert summary["metrics"].keys() == reference["metrics"].keys()


def test_two_runs_at_once_both_complete_and_agree(server, flow_args, reference, tmp_path):
    data_dir = tmp_path / "data"
    procs = [_start(server, flow_args, data_dir, tmp_path / f"run{i}.log") for i in range(2)]
    for i, proc in enumerate(procs):
        assert proc.wait(timeout=900) == 0, (tmp_path / f"run{i}.log").read_text()[-3000:]
    records = [json.loads(p.read_text()) for p in sorted((data_dir / "artifacts" / "runs").glob("*.json"))]
    assert len(records) == 2
    keys = [{step: ref["key"] for step, ref in r["artifacts"].items()} for r in records]
    assert keys[0] == keys[1]
    assert records[0]["metrics"] == records[1]["metrics"]
    assert _data_bytes(records[0]) == _data_bytes(reference)
    artifacts = data_dir / "artifacts"
    leftovers = [*artifacts.glob(".staging/*/.tmp-*"), *artifacts.glob(".staging/*/.trash-*"), *artifacts.glob("*/.*/")]
    assert leftovers == []
