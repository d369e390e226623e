"""End to end as users run it: a real Prefect server and worker, `prefect deploy --all` from
prefect.yaml, `prefect deployment run train-embeddings/mnr`, results read through the API.
Loopback only; everything started here is stopped, also when a step fails."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest
from prefect.settings import PREFECT_API_URL, temporary_settings

from tests import prefect_stack as stack

pytestmark = pytest.mark.integration
PROJECT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def deployed(tmp_path_factory):
    """Server (temporary SQLite), the gpu pool, every deployment of prefect.yaml, one worker."""
    tmp = tmp_path_factory.mktemp("prefect-stack")
    env = stack.stack_env(tmp, stack.free_port(), PROJECT)
    procs = []
    try:
        server = stack.start(
            ["server", "start", "--host", "127.0.0.1", "--port", env["PREFECT_SERVER_API_PORT"]],
            env,
            tmp / "server.log",
        )
        procs.append(server)
        stack.wait_healthy(env["PREFECT_API_URL"], server)
        stack.cli(["work-pool", "create", "gpu", "--type", "process", "--overwrite"], env)
        stack.cli(["--no-prompt", "deploy", "--all"], env, cwd=PROJECT)
        procs.append(
            stack.start(["worker", "start", "--pool", "gpu", "--type", "process"], env, tmp / "worker.log", cwd=PROJECT)
        )
        with temporary_settings({PREFECT_API_URL: env["PREFECT_API_URL"]}):
            yield env, tmp
    finally:
        for proc in reversed(procs):
            stack.stop(proc)
        stack.sweep(env["PREFECT_API_URL"])


def _run(env: dict, params: dict, deployment: str = "mnr") -> tuple[str, float]:
    args = ["deployment", "run", f"train-embeddings/{deployment}"]
    for name, value in params.items():
        args += ["-p", f"{name}={value}"]
    started = time.perf_counter()
    done = stack.cli([*args, "--watch", "--watch-timeout", "900"], env, timeout=960)
    seconds = time.perf_counter() - started
    assert "Completed" in done.stdout, done.stdout[-2000:]
    run_id = next(line.split("UUID:")[1].strip() for line in done.stdout.splitlines() if "UUID:" in line)
    return run_id, seconds


async def _inspect(run_id: str):
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId

    async with get_client() as client:
        flow_run = await client.read_flow_run(run_id)
        summary = await flow_run.state.aresult()
        artifacts = await client.read_artifacts(
            artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[flow_run.id]))
        )
        deployment = await client.read_deployment_by_name("train-embeddings/mnr")
        names = {d.name for d in await client.read_deployments()}
        return flow_run, summary, {a.key: a for a in artifacts if a.key}, deployment, names


def test_deployment_run_completes_then_is_served_from_cache(deployed, tiny_bert, nli_sample, tmp_path):
    env, tmp = deployed
    source = tmp_path / "nli.parquet"
    nli_sample.head(200)[["premise", "hypothesis", "label"]].to_parquet(source)
    params = {
        "nli_source": source,
        "max_pairs": 200,
        "base_model": tiny_bert,
        "max_steps": 3,
        "warmup_steps": 1,
        "eval_steps": 0,
        "eval_limit": 100,
        "data_dir": tmp_path / "data",
    }

    run_id, cold = _run(env, params)
    flow_run, summary, artifacts, deployment, names = asyncio.run(_inspect(run_id))
    assert flow_run.state.is_completed()
    assert names >= {"mnr", "mnr-semi-hard", "cosine", "softmax"}
    assert deployment.work_pool_name == "gpu"
    # plain `prefect deploy --all` from the checkout, no extra setting: Prefect records the checkout
    assert deployment.pull_steps == [
        {"prefect.deployments.steps.set_working_directory": {"directory": str(PROJECT.resolve())}}
    ]
    assert [s.schedule.cron for s in deployment.schedules] == ["0 3 * * 1"]
    assert flow_run.parameters["loss"] == "mnr" and flow_run.parameters["negatives"] == "soft"
    assert summary["parameters"]["nli_source"] == str(source)
    assert not any(ref["cached"] for ref in summary["artifacts"].values())
    assert summary["champion"]["promoted"] is True
    assert {"train-embeddings-metrics", "train-embeddings-lineage"} <= set(artifacts)
    table = artifacts["train-embeddings-metrics"].data
    assert "stsb_test_spearman" in str(table) and "champion" in str(table)
    assert "models/" in artifacts["train-embeddings-lineage"].data
    for ref in summary["artifacts"].values():
        assert (Path(ref["path"]) / "manifest.json").exists()
    worker_log = (tmp / "worker.log").read_text()
    assert "with mnr loss on cpu" in worker_log

    run_id, warm = _run(env, params)
    _, again, artifacts, _, _ = asyncio.run(_inspect(run_id))
    assert all(ref["cached"] for ref in again["artifacts"].values())
    assert again["metrics"] == summary["metrics"]
    assert again["champion"]["promoted"] is False
    assert "| True |" in artifacts["train-embeddings-lineage"].data
    print(f"\ndeployment run → Completed: cold {cold:.1f}s, cached {warm:.1f}s")
