"""The commands on a URL store, against a real S3 server (SeaweedFS): inspect lists what the store holds and
checks its bytes, from any machine; gc removes from the store itself what nothing needs, and never what the
champion, a recent run, a live run's lease or a live build holds; export pulls its model from the store; a bad
URL, a missing bucket or missing credentials exit 2 naming the problem."""

from __future__ import annotations

import datetime as dt
import json
import shutil
import uuid
from pathlib import Path

import pandas as pd
import pytest

from flows import cli
from tasks.store import leases, remote, store_cleanup
from tasks.store.artifacts import ArtifactRef, artifacts_root, find, materialize, write_parquet
from tasks.store.champion import ChampionDamaged, champion_lock, read_champion, write_champion
from tasks.store.locks import lock_path
from tasks.store.object_locks import ObjectLease, holder_facts
from tasks.store.runs import ModelFacts, RunArtifacts, RunRecord, write_run_record

LATER = dt.timedelta(hours=1)  # past every lease's window (10 min) and the min_age_hours the tests give


@pytest.fixture(autouse=True)
def fresh_filesystem():
    """remote caches one filesystem per process: make it against this test's server and keys."""
    remote._filesystem.cache_clear()
    yield
    remote._filesystem.cache_clear()


def _artifact(url: str, stage: str, params: dict, parents: list[ArtifactRef] = ()) -> ArtifactRef:
    def build(folder: Path) -> int:
        return write_parquet(pd.DataFrame({"x": range(3), "tag": [stage] * 3}), folder / "t.parquet")

    return materialize(url, stage, 1, params, list(parents), build)


def _record(url: str, **refs: ArtifactRef) -> None:
    record = RunRecord({}, "", {}, {}, {}, ModelFacts("base", "local"), None, RunArtifacts(**refs), {}, {}, {})
    write_run_record(url, record)


def _crown(url: str, model: ArtifactRef) -> None:
    with champion_lock(url, "champion"):
        read_champion(url)
        record = {"model_key": model.key, "model_path": remote.public_path(model.folder / "model")}
        write_champion(url, "champion", record | {"metric": "stsb_test_spearman", "score": 0.5})


def _put(url: str, rel: str, body: bytes) -> None:
    store = remote.parse(url)
    store.fs.pipe_file(f"{store.root}/artifacts/{rel}", body)


def _held(url: str) -> set[str]:
    """stage/key of every artifact whose manifest the store holds."""
    store = remote.parse(url)
    files = store_cleanup.artifact_files(store_cleanup.listing(store))
    return {name for name, held in files.items() if "manifest.json" in held}


def _objects(url: str, prefix: str) -> list[str]:
    return sorted(rel for rel in store_cleanup.listing(remote.parse(url)) if rel.startswith(prefix))


def _other_machine(monkeypatch, tmp_path: Path) -> None:
    """Another machine: the same store, an empty cache."""
    monkeypatch.setenv(remote.CACHE_ENV, str(tmp_path / f"machine-{uuid.uuid4().hex[:6]}"))


def test_gc_keeps_what_the_champion_recent_runs_leases_and_live_builds_hold_and_removes_the_rest(
    store_url, capsys, monkeypatch
):
    url = store_url
    tokens = _artifact(url, "tokens", {"t": 1})
    model = _artifact(url, "models", {"m": 1}, [tokens])
    _crown(url, model)
    older, recent = _artifact(url, "raw", {"run": "older"}), _artifact(url, "raw", {"run": "recent"})
    _record(url, raw=older)
    _record(url, raw=recent)
    unused = _artifact(url, "pairs", {"u": 1})
    leased, leased_parent = _artifact(url, "pairs", {"l": 1}), _artifact(url, "raw", {"lp": 1})
    build_input, dead_run = _artifact(url, "raw", {"bp": 1}), _artifact(url, "raw", {"d": 1})
    store = remote.parse(url)
    building = "f" * 16  # a build live on another machine: its lock renewed, its files going up, no manifest yet
    lock = store.remote(lock_path(artifacts_root(url) / "triplets" / building))
    facts = holder_facts(parents=[{"stage": "raw", "key": build_input.key}], params={"miner": "beef"})
    assert ObjectLease(store, lock, facts).try_take()
    _put(url, f"triplets/{building}/triplets.parquet", b"half an upload")
    _put(url, f"raw/{'e' * 16}/raw.parquet", b"a killed upload")  # no lock, no manifest
    _put(url, "runs/live/elsewhere-1-0badf00d.lease", b'{"holder": {"pid": 1}}\n' + json.dumps(
        {"stage": "raw", "key": dead_run.key, "parents": []}).encode() + b"\n")  # fmt: skip
    _put(url, "embeddings/beef/shard-00000.parquet", b"the live build's miner")
    _put(url, "embeddings/cafe/shard-00000.parquet", b"nobody's miner")

    with leases.held(url) as lease:  # a run live on this machine, its lease in the store too
        lease.add(leases.entry("pairs", leased.key, [{"stage": "raw", "key": leased_parent.key}], {}, None))
        gone = {f"raw/{older.key}", f"pairs/{unused.key}", "embeddings/cafe"}
        argv = ["gc", "--data-dir", url, "--keep-runs", "1", "--min-age-hours", "0"]
        assert cli.main([*argv, "--dry-run"]) == 0
        out = capsys.readouterr().out
        assert {line.removeprefix(f"would remove {url}/artifacts/") for line in out.splitlines() if url in line} == gone
        assert {f"raw/{older.key}", f"pairs/{unused.key}"} <= _held(url)
        assert cli.main(argv) == 0
        out = capsys.readouterr().out
        assert f"removing {url}/artifacts/pairs/{unused.key}" in out and "from the store" in out
        assert not _held(url) & gone and _objects(url, f"pairs/{unused.key}/") == []
        assert _objects(url, "embeddings/") == ["embeddings/beef/shard-00000.parquet"]
        kept = {tokens, model, recent, leased, leased_parent, build_input, dead_run}
        assert {f"{ref.stage}/{ref.key}" for ref in kept} == _held(url)
        assert _objects(url, f"triplets/{building}/") and _objects(url, f"raw/{'e' * 16}/")
    assert _objects(url, "runs/live/") == ["runs/live/elsewhere-1-0badf00d.lease"]  # this run's lease went with it

    # An hour on: the killed run's lease and the build's lock are stale, their holders dead.
    later = store_cleanup.store_now(store) + LATER
    doomed = store_cleanup.unreferenced(url, keep_runs=1, min_age_hours=0.5, now=later)
    assert {d.name: d.kind for d in doomed} == {
        f"pairs/{leased.key}": "artifact", f"raw/{leased_parent.key}": "artifact",
        f"raw/{build_input.key}": "artifact", f"raw/{dead_run.key}": "artifact",
        f"raw/{'e' * 16}": "upload", f"triplets/{building}": "upload", "embeddings/beef": "embeddings",
        f"triplets/.partial-{building}.lock": "lock", "runs/live/elsewhere-1-0badf00d.lease": "lease",
    }  # fmt: skip
    assert store_cleanup.remove(url, doomed, keep_runs=1, min_age_hours=0.5, now=later) > 0
    assert _held(url) == {f"tokens/{tokens.key}", f"models/{model.key}", f"raw/{recent.key}"}
    assert [rel for rel in store_cleanup.listing(store) if not rel.startswith(("champion/", "runs/"))] == sorted(
        f"{ref.stage}/{ref.key}/{name}" for ref in (tokens, model, recent) for name in ("manifest.json", "t.parquet")
    )


def test_a_young_run_record_keeps_what_it_used_however_old(store_url, monkeypatch):
    """Reuse touches no object in a store: a record younger than min_age_hours is what says an artifact is used."""
    used, other = _artifact(store_url, "raw", {"used": 1}), _artifact(store_url, "raw", {"other": 1})
    _record(store_url, raw=used)
    listing = store_cleanup.listing

    def aged(store, under=""):  # every object but the run records written two hours ago
        return {rel: info if store_cleanup.RECORD.fullmatch(rel) else {**info, "LastModified": info["LastModified"]
                - 2 * LATER} for rel, info in listing(store, under).items()}  # fmt: skip

    monkeypatch.setattr(store_cleanup, "listing", aged)
    names = {d.name for d in store_cleanup.unreferenced(store_url, keep_runs=0, min_age_hours=1)}
    assert names == {f"raw/{other.key}"}


def test_the_manifest_goes_first_and_comes_back_for_a_run_that_names_the_artifact_meanwhile(
    store_url, tmp_path, monkeypatch
):
    unused = _artifact(store_url, "raw", {"u": 1})
    doomed = store_cleanup.unreferenced(store_url, keep_runs=0, min_age_hours=0)
    assert [d.objects[0] for d in doomed] == [f"raw/{unused.key}/manifest.json"]
    listing, seen = store_cleanup.listing, []

    def a_run_starts(store, under=""):  # between the manifests and the files: a run names the artifact
        if under == store_cleanup.LIVE:
            seen.append(_held(store_url))
            line = json.dumps({"stage": "raw", "key": unused.key, "parents": []})
            _put(store_url, "runs/live/other-2-00c0ffee.lease", line.encode() + b"\n")
        return listing(store, under)

    monkeypatch.setattr(store_cleanup, "listing", a_run_starts)
    assert store_cleanup.remove(store_url, doomed, keep_runs=0, min_age_hours=0) == 0
    assert seen == [set()]  # the artifact had stopped existing before anything else went
    _other_machine(monkeypatch, tmp_path)
    assert find(store_url, "raw", unused.key) is not None  # manifest back, files never gone: it pulls whole


def test_gc_on_a_store_refuses_over_a_damaged_champion_record(store_url, capsys):
    unused = _artifact(store_url, "raw", {})
    _put(store_url, "champion/champion.json", b'{"model_key": ')
    assert cli.main(["gc", "--data-dir", store_url, "--min-age-hours", "0"]) == 2
    assert "refused" in capsys.readouterr().err
    with pytest.raises(ChampionDamaged, match="champion.json"):
        store_cleanup.unreferenced(store_url, keep_runs=0, min_age_hours=0)
    assert f"raw/{unused.key}" in _held(store_url)


def test_inspect_lists_and_checks_the_stores_artifacts_from_a_fresh_cache(store_url, tmp_path, capsys, monkeypatch):
    sound = _artifact(store_url, "raw", {"s": 1})
    resized, altered = _artifact(store_url, "pairs", {"r": 1}, [sound]), _artifact(store_url, "pairs", {"a": 2})
    _other_machine(monkeypatch, tmp_path)
    assert cli.main(["inspect", "--data-dir", store_url]) == 0
    out = capsys.readouterr().out
    assert all(ref.key in out for ref in (sound, resized, altered)) and "DAMAGED" not in out
    assert f"raw/{sound.key}" in out  # the parents column
    assert not artifacts_root(store_url).exists()  # listed from the store: nothing pulled
    _put(store_url, f"pairs/{resized.key}/t.parquet", b"shorter")
    body = bytearray(Path(altered.path, "t.parquet").read_bytes())
    body[len(body) // 2] ^= 0xFF  # one flipped byte, same size: only a byte check sees it
    _put(store_url, f"pairs/{altered.key}/t.parquet", bytes(body))
    assert cli.main(["inspect", "--data-dir", store_url]) == 1
    out = capsys.readouterr().out
    assert f"damaged: pairs/{resized.key} (t.parquet)" in out and f"damaged: pairs/{altered.key}" not in out
    assert cli.main(["inspect", "--data-dir", store_url, "--verify"]) == 1
    out = capsys.readouterr().out
    assert f"damaged: pairs/{altered.key} (t.parquet)" in out and f"damaged: raw/{sound.key}" not in out
    assert cli.main(["inspect", f"raw/{sound.key}", "--data-dir", store_url]) == 0
    out = capsys.readouterr().out
    assert "check: ok" in out and "== t.parquet: 3 rows" in out
    assert find(store_url, "raw", sound.key) is not None  # pulled into this machine's mirror, checked
    assert cli.main(["inspect", f"pairs/{altered.key}", "--data-dir", store_url]) == 0
    assert "check: DAMAGED: t.parquet" in capsys.readouterr().out
    with pytest.raises(SystemExit, match="no such artifact in the store"):
        cli.main(["inspect", f"raw/{'0' * 16}", "--data-dir", store_url])


def test_export_pulls_the_champion_from_the_store_on_another_machine(store_url, tiny_bert, tmp_path, capsys,
                                                                     monkeypatch):  # fmt: skip
    def build(folder: Path) -> None:
        shutil.copytree(tiny_bert, folder / "model")

    model = materialize(store_url, "models", 1, {"m": 1}, [], build)
    _crown(store_url, model)
    _other_machine(monkeypatch, tmp_path)
    assert cli.main(["export", "champion", "--format", "onnx", "--data-dir", store_url]) == 0
    assert "exported" in capsys.readouterr().out
    [export] = [name for name in _held(store_url) if name.startswith("exports/")]
    _other_machine(monkeypatch, tmp_path)
    assert cli.main(["export", f"models/{model.key}", "--format", "onnx", "--data-dir", store_url]) == 0
    assert "cached" in capsys.readouterr().out  # the export is the store's, pulled
    assert cli.main(["export", "models/0123456789abcdef", "--format", "onnx", "--data-dir", store_url]) == 2
    assert "no such model artifact" in capsys.readouterr().err
    assert (artifacts_root(store_url) / export / "model").is_dir()


def test_a_bad_url_a_missing_bucket_or_no_credentials_exit_2_naming_the_problem(store_url, capsys, monkeypatch):
    for argv, says in (
        (["inspect", "--data-dir", "ftp://host/store"], "the scheme 'ftp' is not one of"),
        (["gc", "--data-dir", "s3://key:secret@bucket/store"], "credentials do not go in the URL"),
        (["inspect", "--data-dir", "s3:///store"], "names no bucket"),
        (["inspect", "--data-dir", f"s3://no-such-{uuid.uuid4().hex[:8]}/store"], "the bucket does not exist"),
        (["gc", "--data-dir", f"s3://no-such-{uuid.uuid4().hex[:8]}/store"], "the bucket does not exist"),
    ):
        assert cli.main(argv) == 2, argv
        err = capsys.readouterr().err
        assert says in err and "data_dir" in err, err
        assert "secret" not in err
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.delenv(name)
    remote._filesystem.cache_clear()
    assert cli.main(["inspect", "--data-dir", store_url]) == 2
    assert "no credentials found" in capsys.readouterr().err
