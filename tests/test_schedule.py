"""Scheduled retraining end to end: a real Prefect server with its scheduler on, a worker, and a deployment
on a short interval over a local folder of NLI pairs (the schedule in prefect.yaml stays weekly; this
deployment sets its own interval). The first scheduled run trains and becomes champion; a file of new
pairs arrives; the next scheduled run retrains, is evaluated like with like and decided by the promotion
rule; the run after it, with nothing new, is served from the store and keeps the champion."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest
from prefect.settings import PREFECT_API_URL, temporary_settings

from tests import prefect_stack as stack

pytestmark = pytest.mark.integration
PROJECT = Path(__file__).resolve().parent.parent
COLUMNS = ["premise", "hypothesis", "label"]


async def _runs(name: str) -> list:
    """The deployment's flow runs, earliest expected start first."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterName
    from prefect.client.schemas.sorting import FlowRunSort

    async with get_client() as client:
        return await client.read_flow_runs(
            deployment_filter=DeploymentFilter(name=DeploymentFilterName(any_=[name])),
            sort=FlowRunSort.EXPECTED_START_TIME_ASC,
        )


def _wait_started(name: str, timeout: float = 600) -> None:
    """Block until the deployment's first run is running (or done)."""
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        if any(r.state and (r.state.is_running() or r.state.is_final()) for r in asyncio.run(_runs(name))):
            return
        time.sleep(0.5)
    raise TimeoutError(f"no scheduled run of {name} started in {timeout}s")


def _wait_completed(name: str, count: int, timeout: float = 900) -> list:
    """Block until ``count`` runs of the deployment have completed (a failed one fails the test)."""
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        runs = asyncio.run(_runs(name))
        failed = [r for r in runs if r.state and (r.state.is_failed() or r.state.is_crashed())]
        assert not failed, f"scheduled run failed: {failed[0].state}"
        done = [r for r in runs if r.state and r.state.is_completed()]
        if len(done) >= count:
            return done[:count]
        time.sleep(1)
    raise TimeoutError(f"{count} scheduled runs of {name} did not complete in {timeout}s")


def test_a_schedule_retrains_on_new_data_and_is_served_from_the_store_otherwise(tiny_bert, nli_sample, tmp_path):
    folder = tmp_path / "pairs"
    folder.mkdir()
    nli_sample.head(150)[COLUMNS].to_parquet(folder / "2026-11-02.parquet")
    env = stack.stack_env(tmp_path, stack.free_port(), PROJECT) | {
        "PREFECT_SERVER_SERVICES_SCHEDULER_ENABLED": "true",
        "PREFECT_SERVER_SERVICES_SCHEDULER_LOOP_SECONDS": "2",
        "PREFECT_SERVER_SERVICES_LATE_RUNS_ENABLED": "false",  # fewer writes to SQLite while runs wait their turn
    }
    worker_home = tmp_path / "worker"
    worker_home.mkdir()
    server = stack.start(["server", "start", "--host", "127.0.0.1", "--port", env["PREFECT_SERVER_API_PORT"]],
                         env, tmp_path / "server.log")  # fmt: skip
    worker = None
    try:
        stack.wait_healthy(env["PREFECT_API_URL"], server)
        stack.cli(["work-pool", "create", "gpu", "--type", "process", "--overwrite"], env)
        stack.cli(["work-pool", "set-concurrency-limit", "gpu", "1"], env)  # one training at a time
        params = {
            "nli_source": str(folder),
            "max_pairs": 1000,
            "base_model": str(tiny_bert),
            "max_steps": 3,
            "warmup_steps": 1,
            "eval_steps": 0,
            "eval_limit": 100,
            "data_dir": str(tmp_path / "data"),
        }
        args = ["--no-prompt", "deploy", "flows/train_embeddings.py:train_embeddings", "-n", "every-20s"]
        args += ["-p", "gpu", "--interval", "20"]
        for key, value in params.items():
            args += ["--param", f"{key}={value}"]
        stack.cli(args, env, cwd=PROJECT)
        with temporary_settings({PREFECT_API_URL: env["PREFECT_API_URL"]}):
            worker = stack.start(["worker", "start", "--pool", "gpu"], env, tmp_path / "worker.log", cwd=worker_home)
            _wait_started("every-20s")
            stack.cli(["work-pool", "pause", "gpu"], env)  # the next scheduled runs wait while new pairs arrive
            (first,) = _wait_completed("every-20s", 1)
            nli_sample.iloc[150:300][COLUMNS].to_parquet(folder / "2026-11-09.parquet")
            stack.cli(["work-pool", "resume", "gpu"], env)
            runs = _wait_completed("every-20s", 3)
            summaries = [asyncio.run(r.state.aresult()) for r in runs]
    finally:
        if worker is not None:
            stack.stop(worker)
        stack.stop(server)
        stack.sweep(env["PREFECT_API_URL"])

    assert runs[0].id == first.id and all(r.auto_scheduled for r in runs)  # made by the scheduler
    trained, retrained, served = summaries
    walls = [round((r.end_time - r.start_time).total_seconds(), 1) for r in runs]
    print("\nscheduled runs:", [(w, s["champion"]["reason"]) for w, s in zip(walls, summaries)])

    # 1. the first run trains and becomes champion
    assert not trained["artifacts"]["model"]["cached"] and trained["champion"]["promoted"] is True
    # 2. a new file: a new source key, a new model, compared like with like, decided by the rule
    assert retrained["artifacts"]["raw"]["key"] != trained["artifacts"]["raw"]["key"]
    assert retrained["artifacts"]["raw"]["rows"] == 300
    assert not retrained["artifacts"]["model"]["cached"]
    decision = retrained["champion"]
    assert decision["champion_before"]["model_key"] == trained["artifacts"]["model"]["key"]
    assert decision["compared_on"] == trained["evaluation"] and decision["rule"]
    # 3. nothing new: every stage from the store, the champion kept
    assert all(ref["cached"] for ref in served["artifacts"].values())
    assert served["champion"]["promoted"] is False
    assert served["champion"]["champion_after"]["model_key"] == decision["champion_after"]["model_key"]
