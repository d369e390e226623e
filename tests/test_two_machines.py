"""Two machines, one store: two processes with their own caches and Prefect homes, sharing only a store URL on
a real S3 server (SeaweedFS on loopback), each running ``train-embeddings run`` as a user does."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from tasks.store import remote
from tasks.store.champion import read_champion
from tasks.store.runs import read_run_record, run_records
from tests import object_store

pytestmark = pytest.mark.integration
PROJECT = Path(__file__).resolve().parent.parent
CLI = str(Path(sys.executable).parent / "train-embeddings")


def machine_env(home: Path, server: object_store.SeaweedFS) -> dict[str, str]:
    """A machine of its own: its cache, its Prefect home and database; the store's endpoint and keys."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "AWS_"))}
    return (
        env
        | server.env()
        | {
            remote.CACHE_ENV: str(home / "cache"),
            "PREFECT_HOME": str(home / "prefect"),
            "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
            "PREFECT_SERVER_DATABASE_CONNECTION_URL": f"sqlite+aiosqlite:///{home / 'prefect.db'}",
            "TRAIN_EMBEDDINGS_LEASE_TTL": "10",
        }
    )


@pytest.fixture(scope="module")
def machines(object_store, tiny_bert, nli_sample, tmp_path_factory):
    """Run the flow on machine "a" or "b" (same parameters unless overridden); returns the run's record."""
    root = tmp_path_factory.mktemp("two-machines")
    source = root / "source"
    source.mkdir()
    nli_sample.head(240)[["premise", "hypothesis", "label"]].to_parquet(source / "part-0.parquet")
    url = f"s3://{object_store.make_bucket('two-machines')}/team"
    params = dict(loss="mnr", negatives="semi-hard", nli_source=str(source), max_pairs=400,
                  base_model=str(tiny_bert), epochs=1, batch_size=16, warmup_steps=1, eval_steps=2, max_steps=3,
                  eval_limit=100, data_dir=url)  # fmt: skip
    logs = []

    def run(name: str) -> dict:
        home = root / name
        (home / "work").mkdir(parents=True, exist_ok=True)
        args = [CLI, "run", *(f"-p={k}={v}" for k, v in params.items())]
        done = subprocess.run(args, cwd=home / "work", env=machine_env(home, object_store), capture_output=True,
                              text=True, timeout=900)  # fmt: skip
        logs.append(done.stdout + done.stderr)
        assert done.returncode == 0, (done.stdout[-3000:], done.stderr[-5000:])
        return newest_record(url, root / "reader", object_store)

    run.url, run.source, run.root, run.logs, run.server = url, source, root, logs, object_store
    return run


def newest_record(url: str, cache: Path, server: object_store.SeaweedFS) -> dict:
    """The newest run record in the store, read by a third machine."""
    with reading(cache, server):
        return read_run_record(run_records(url)[-1]).as_dict()


class reading:
    """This process as a third machine reading the store (its own cache)."""

    def __init__(self, cache: Path, server: object_store.SeaweedFS) -> None:
        self.env = server.env() | {remote.CACHE_ENV: str(cache)}

    def __enter__(self) -> None:
        self.saved = {k: os.environ.get(k) for k in self.env}
        os.environ.update(self.env)
        object_store.clear_s3fs_cache()

    def __exit__(self, *exc) -> None:
        for k, v in self.saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def cached(record: dict) -> dict[str, bool]:
    return {name: ref["cached"] for name, ref in record["artifacts"].items()}


def test_two_machines_share_artifacts_champion_and_retrain_on_a_new_file(machines):
    first = machines("a")
    assert not any(cached(first).values())
    assert first["champion"]["promoted"] and first["champion"]["rule"] == "no champion"

    # the other machine, same parameters: served from the store end to end, and the champion is the first's
    second = machines("b")
    assert all(cached(second).values()), cached(second)
    assert second["champion"]["champion_before"]["model_key"] == first["artifacts"]["model"]["key"]
    with reading(machines.root / "reader", machines.server):
        assert read_champion(machines.url)["model_key"] == first["artifacts"]["model"]["key"]

    # a new file in the source: either machine retrains (and compares with the shared champion)
    extra = machines.source / "part-1.parquet"
    pd.read_parquet(machines.source / "part-0.parquet").iloc[::-1].head(120).to_parquet(extra)
    third = machines("b")
    assert not cached(third)["raw"] and not cached(third)["model"]
    assert third["champion"]["champion_before"]["model_key"] == first["artifacts"]["model"]["key"]


def test_no_key_or_secret_is_written_anywhere(machines):
    """Not in the caches, the Prefect homes and databases, the logs, nor any object of the store."""
    if not machines.logs:
        machines("a")
    secrets = [object_store.SECRET_KEY.encode(), object_store.ACCESS_KEY.encode()]
    for path in machines.root.rglob("*"):
        if path.is_file():
            data = path.read_bytes()
            assert not [s for s in secrets if s in data], path
    for log in machines.logs:
        assert not [s for s in secrets if s.decode() in log]
    with reading(machines.root / "reader", machines.server):
        store = remote.store_of(machines.url)
        objects = store.fs.find(store.root)
        assert objects
        for name in objects:
            assert not [s for s in secrets if s in store.fs.cat_file(name)], name


def test_a_missing_bucket_or_no_credentials_fail_the_run_before_any_stage(machines, tmp_path):
    (tmp_path / "m").mkdir()
    env = machine_env(tmp_path / "m", machines.server)
    cases = {
        "the bucket does not exist": (env, "s3://no-such-bucket/team"),
        "no credentials found": ({k: v for k, v in env.items() if not k.startswith("AWS_SECRET")}, machines.url),
    }
    for message, (run_env, url) in cases.items():
        args = [CLI, "run", "-p", f"data_dir={url}"]
        done = subprocess.run(args, cwd=tmp_path, env=run_env, capture_output=True, text=True, timeout=300)
        assert done.returncode != 0 and message in done.stderr + done.stdout, done.stderr[-3000:]
        assert "parameter data_dir" in done.stderr + done.stdout
        assert not list((tmp_path / "m" / "cache").rglob("manifest.json"))  # no stage ran
