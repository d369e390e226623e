"""End to end as users run it: a real Prefect server and worker, `prefect deploy --all` from
prefect.yaml, `prefect deployment run train-embeddings/mnr`, results read through the API.
Loopback only; everything started here is stopped, also when a step fails."""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
import time
from pathlib import Path

import pytest
from prefect.settings import PREFECT_API_URL, temporary_settings

from tests import prefect_stack as stack

pytestmark = pytest.mark.integration
PROJECT = Path(__file__).resolve().parent.parent


def _git(*args: str, cwd: Path) -> str:
    done = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, check=True)
    return done.stdout.strip()


@pytest.fixture(scope="module")
def bare_repository(tmp_path_factory) -> tuple[str, str]:
    """A bare repository holding this project's HEAD plus one more commit, and that commit: a run from
    it is recognisable by its commit, which the checkout does not have."""
    tmp = tmp_path_factory.mktemp("git")
    bare, work = tmp / "train-embeddings.git", tmp / "work"
    _git("clone", "--quiet", "--no-local", str(PROJECT), str(work), cwd=tmp)
    (work / "CLONED.md").write_text("a commit only the bare repository has\n")
    _git("add", "CLONED.md", cwd=work)
    _git("-c", "user.name=test", "-c", "user.email=test@localhost", "commit", "--quiet", "-m", "marker", cwd=work)
    _git("clone", "--quiet", "--bare", str(work), str(bare), cwd=tmp)
    return f"file://{bare}", _git("rev-parse", "HEAD", cwd=work)


@pytest.fixture(scope="module")
def deployed(tmp_path_factory, bare_repository, object_store):
    """Server (temporary SQLite), the gpu pool, every deployment of prefect.yaml, one worker that
    runs in an empty folder: no checkout of the project where it works. mnr-git's store is a bucket of a
    real S3 server; the worker has its keys and a cache of its own."""
    tmp = tmp_path_factory.mktemp("prefect-stack")
    store = f"s3://{object_store.make_bucket('deployments')}/team"
    env = stack.stack_env(tmp, stack.free_port(), PROJECT) | object_store.env()
    env["TRAIN_EMBEDDINGS_CACHE"] = str(tmp / "worker-cache")
    deploy_env = env | {
        "TRAIN_EMBEDDINGS_REPO": bare_repository[0],
        "TRAIN_EMBEDDINGS_COMMIT": bare_repository[1],
        "TRAIN_EMBEDDINGS_STORE": store,
    }  # mnr-git's: outside every run's folder
    worker_home = tmp / "worker"
    worker_home.mkdir()
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
        stack.cli(["--no-prompt", "deploy", "--all"], deploy_env, cwd=PROJECT)
        procs.append(
            stack.start(
                ["worker", "start", "--pool", "gpu", "--type", "process"], env, tmp / "worker.log", cwd=worker_home
            )
        )
        with temporary_settings({PREFECT_API_URL: env["PREFECT_API_URL"]}):
            yield env, tmp, store
    finally:
        for proc in reversed(procs):
            stack.stop(proc)
        stack.sweep(env["PREFECT_API_URL"])


def _params(tiny_bert, nli_sample, tmp_path) -> dict:
    source = tmp_path / "nli.parquet"
    nli_sample.head(200)[["premise", "hypothesis", "label"]].to_parquet(source)
    return {
        "nli_source": source,
        "max_pairs": 200,
        "base_model": tiny_bert,
        "max_steps": 3,
        "warmup_steps": 1,
        "eval_steps": 0,
        "eval_limit": 100,
        "data_dir": tmp_path / "data",
    }


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


async def _inspect(run_id: str, name: str = "mnr"):
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId

    async with get_client() as client:
        flow_run = await client.read_flow_run(run_id)
        summary = await flow_run.state.aresult()
        artifacts = await client.read_artifacts(
            artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[flow_run.id]))
        )
        deployment = await client.read_deployment_by_name(f"train-embeddings/{name}")
        names = {d.name for d in await client.read_deployments()}
        return flow_run, summary, {a.key: a for a in artifacts if a.key}, deployment, names


def test_deployment_run_completes_then_is_served_from_cache(deployed, tiny_bert, nli_sample, tmp_path):
    env, tmp, store = deployed
    params = _params(tiny_bert, nli_sample, tmp_path)
    source = params["nli_source"]

    run_id, cold = _run(env, params)
    flow_run, summary, artifacts, deployment, names = asyncio.run(_inspect(run_id))
    assert flow_run.state.is_completed()
    assert names >= {"mnr", "mnr-semi-hard", "cosine", "softmax", "gist", "mnr-matryoshka", "mnr-git"}
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


def test_a_worker_without_the_checkout_runs_the_git_deployment(
    deployed, bare_repository, tiny_bert, nli_sample, tmp_path
):
    env, tmp, store = deployed
    url, commit = bare_repository
    params = _params(tiny_bert, nli_sample, tmp_path)
    del params["data_dir"]  # the deployment's own: the store TRAIN_EMBEDDINGS_STORE named when deploying
    run_id, _ = _run(env, params, deployment="mnr-git")
    flow_run, summary, _, deployment, _ = asyncio.run(_inspect(run_id, "mnr-git"))
    assert flow_run.state.is_completed()
    clone = deployment.pull_steps[0]["prefect.deployments.steps.git_clone"]
    assert (clone["repository"], clone["commit_sha"]) == (url, commit)  # fixed when deploying
    assert deployment.parameters["data_dir"] == flow_run.parameters["data_dir"] == store
    assert deployment.job_variables["env"] == {"TRAIN_EMBEDDINGS_STORE": store}  # the run's environment too
    # the code that ran came from the clone: its manifests carry the commit only the bare repository has
    manifest = json.loads((Path(summary["artifacts"]["model"]["path"]) / "manifest.json").read_text())
    assert manifest["environment"]["git"] == {"commit": commit, "dirty": False}
    assert _git("rev-parse", "HEAD", cwd=PROJECT) != commit
    assert not (tmp / "worker" / "flows").exists()  # nothing of the project was put where the worker works
    assert summary["champion"]["promoted"] is True

    # the run's temporary folder and clone are gone, and so is the worker's cache: the store has it all
    shutil.rmtree(tmp / "worker-cache")
    run_id, _ = _run(env, params, deployment="mnr-git")
    _, again, _, _, _ = asyncio.run(_inspect(run_id, "mnr-git"))
    assert all(ref["cached"] for ref in again["artifacts"].values()), again["artifacts"]
    assert again["champion"]["champion_before"]["model_key"] == summary["artifacts"]["model"]["key"]
    assert again["champion"]["rule"] == "already champion"  # the champion was kept


def test_the_git_deployment_is_not_deployed_without_a_store(deployed, bare_repository):
    env, tmp, store = deployed
    plain = {k: v for k, v in env.items() if k != "TRAIN_EMBEDDINGS_STORE"}
    plain |= {"TRAIN_EMBEDDINGS_REPO": bare_repository[0], "TRAIN_EMBEDDINGS_COMMIT": bare_repository[1]}
    for given in (None, "data"):  # unset, or a relative folder (inside each run's temporary directory)
        deploy_env = plain if given is None else plain | {"TRAIN_EMBEDDINGS_STORE": given}
        with pytest.raises(RuntimeError, match="deployment needs TRAIN_EMBEDDINGS_STORE") as failed:
            stack.cli(["--no-prompt", "deploy", "-n", "mnr-git"], deploy_env, cwd=PROJECT)
        assert f'got "{given or ""}"' in str(failed.value)
    deployment = asyncio.run(_inspect_deployment("mnr-git"))
    assert deployment.parameters["data_dir"] == store  # the deployment as it was


async def _inspect_deployment(name: str):
    from prefect.client.orchestration import get_client

    async with get_client() as client:
        return await client.read_deployment_by_name(f"train-embeddings/{name}")
