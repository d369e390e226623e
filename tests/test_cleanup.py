"""gc: what no recent run, champion or live run needs goes; a live run, a resumable training, and what the
kept runs used (their tokens, their miners' embedding stores in every precision) stay."""

from __future__ import annotations

import ast
import os
import threading
import time
from pathlib import Path

import pytest

from flows import cli
from tasks.store import cleanup
from tasks.store.artifacts import ArtifactRef, artifact_key, artifacts_root, materialize, verify
from tasks.store.champion import ChampionDamaged
from tasks.store.locks import final_of, lock_path, release_lock, staging_dir, try_lock
from tasks.store.runs import ModelFacts, RunArtifacts, RunRecord, write_run_record

OLD = 100.0  # hours: older than min_age_hours (24) and keep_partial_hours (72)


def _age(path: Path, hours: float) -> Path:
    stamp = time.time() - hours * 3600
    os.utime(path, (stamp, stamp))
    return path


def _write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def _mkdir(path: Path) -> Path:
    path.mkdir(parents=True)
    return path


def _artifact(data: Path, stage: str, params: dict, parents: list[ArtifactRef] = ()) -> ArtifactRef:
    """A real artifact written by materialize, made old."""

    def build(folder: Path) -> int:
        (folder / "data.txt").write_text(stage)
        return 1

    ref = materialize(data, stage, 1, params, list(parents), build)
    _age(ref.folder, OLD)
    return ref


def _record(data: Path, **refs: ArtifactRef) -> None:
    """A run record that used ``refs`` (by the record's names: raw, triplets, model, ...), as the flow writes it."""
    record = RunRecord({}, "", {}, {}, {}, ModelFacts("base", "local"), None, RunArtifacts(**refs), {}, {}, {})
    write_run_record(str(data), record)


def _partial(data: Path, key: str = "0123456789abcdef", seal_age: float | None = None, sealed: bool = True) -> Path:
    """An interrupted training's folder, old, with one checkpoint ``seal_age`` hours old (sealed or not)."""
    partial = staging_dir(artifacts_root(data) / "models" / key) / f".partial-{key}"
    checkpoint = partial / "_trainer" / "checkpoint-10"
    checkpoint.mkdir(parents=True)
    (checkpoint / "model.safetensors").write_bytes(b"w" * 100)
    if seal_age is not None and sealed:
        _age(_write(checkpoint / cleanup.SEAL, "10"), seal_age)
    _age(checkpoint, OLD)
    _age(partial / "_trainer", OLD)
    return _age(partial, OLD)


def _stale(data: Path, **kwargs) -> set[Path]:
    return {p.resolve() for p in cleanup.unreferenced(data, **kwargs)}


def test_the_seal_is_the_one_checkpoints_write():
    """Read from the source: importing tasks.training.checkpoints would pull in transformers."""
    source = ast.parse((Path(__file__).parent.parent / "tasks" / "training" / "checkpoints.py").read_text())
    seals = [
        ast.literal_eval(node.value)
        for node in source.body
        if isinstance(node, ast.Assign) and [getattr(t, "id", None) for t in node.targets] == ["SEAL"]
    ]
    assert seals == [cleanup.SEAL]


def test_a_partial_whose_lock_is_held_survives_gc_even_when_old(tmp_path):
    partial = _partial(tmp_path)
    lock = lock_path(final_of(partial, partial.name.removeprefix(".partial-")))
    assert lock.parent == artifacts_root(tmp_path) / "models"  # the lock stays beside the key's folder
    lock.parent.mkdir()
    held = try_lock(lock)  # a separate open file description: to flock, another run
    assert held is not None
    try:
        assert partial.resolve() not in _stale(tmp_path)
        assert cleanup.remove([partial]) == 0 and partial.is_dir()  # nor removed if listed before it started
    finally:
        release_lock(held, lock)
    assert partial.resolve() in _stale(tmp_path)
    assert cleanup.remove([partial]) > 0 and not partial.exists() and not lock.exists()


def test_an_old_partial_with_a_young_sealed_checkpoint_survives(tmp_path):
    partial = _partial(tmp_path, seal_age=1.0)
    assert partial.resolve() not in _stale(tmp_path)
    assert partial.resolve() in _stale(tmp_path, keep_partial_hours=0.5)


def test_a_partial_whose_checkpoint_is_older_than_keep_partial_hours_goes(tmp_path):
    old = _partial(tmp_path, key="a" * 16, seal_age=OLD)
    unsealed = _partial(tmp_path, key="b" * 16, seal_age=1.0, sealed=False)  # killed while writing it
    assert {old.resolve(), unsealed.resolve()} <= _stale(tmp_path, keep_partial_hours=72)
    assert old.resolve() not in _stale(tmp_path, keep_partial_hours=OLD + 1)


def test_unreferenced_tokens_and_comparisons_go_and_referenced_tokens_stay(tmp_path):
    triplets = _artifact(tmp_path, "triplets", {"strategy": "soft"})
    used = _artifact(tmp_path, "tokens", {"max_seq_length": 64}, [triplets])
    other = _artifact(tmp_path, "tokens", {"max_seq_length": 128}, [triplets])
    comparison = _artifact(tmp_path, "comparisons", {"grid": ["mnr"]}, [ArtifactRef("metrics", "k", "")])
    model = _artifact(tmp_path, "models", {"loss": "mnr"}, [used])
    _record(tmp_path, model=model)
    stale = _stale(tmp_path, keep_runs=5)
    assert {other.folder.resolve(), comparison.folder.resolve()} <= stale
    assert not {used.folder.resolve(), triplets.folder.resolve(), model.folder.resolve()} & stale
    assert _stale(tmp_path, min_age_hours=OLD + 1) == set()  # nothing old enough


def test_embedding_stores_of_a_kept_miner_stay_in_every_precision(tmp_path):
    mined = _artifact(tmp_path, "triplets", {"strategy": "semi-hard", "miner": "f00d"})
    _record(tmp_path, triplets=mined)
    stores = artifacts_root(tmp_path) / "embeddings"
    names = ["f00d", "f00d-bf16", "f00d-fp16", "beef", "beef-bf16"]
    for name in names:
        (stores / name).mkdir(parents=True)
        _age(_write(stores / name / "shard-0.parquet", "x").parent, OLD)
    assert {p.name for p in _stale(tmp_path) if p.parent.name == "embeddings"} == {"beef", "beef-bf16"}
    assert cleanup.store_fingerprint("f00d-bf16") == cleanup.store_fingerprint("f00d") == "f00d"


def test_a_live_build_keeps_its_old_inputs_and_its_miners_store(tmp_path):
    """A run in progress has no record yet: its lock names its parents and its miner."""
    tokens = _artifact(tmp_path, "tokens", {"max_seq_length": 64})
    store = artifacts_root(tmp_path) / "embeddings" / "cafe-bf16"
    store.mkdir(parents=True)
    _age(store, OLD)
    started, finish = threading.Event(), threading.Event()

    def build(folder: Path) -> int:
        started.set()
        finish.wait(30)
        (folder / "model.txt").write_text("trained")
        return 1

    live = threading.Thread(
        target=materialize, args=(tmp_path, "models", 1, {"miner": "cafe"}, [tokens], build), kwargs={"resumable": True}
    )
    live.start()
    try:
        assert started.wait(30)
        key = artifact_key("models", 1, {"miner": "cafe"}, [tokens])
        partial = _age(artifacts_root(tmp_path) / ".staging" / "models" / f".partial-{key}", OLD)
        stale = _stale(tmp_path)
        assert not {tokens.folder.resolve(), store.resolve(), partial.resolve()} & stale
    finally:
        finish.set()
        live.join()
    assert {tokens.folder.resolve(), store.resolve()} <= _stale(tmp_path)  # done, and in no record


def test_stale_temporary_folders_and_stray_locks_go(tmp_path):
    """In .staging/, and where versions before it left them: beside the key's folder."""
    ref = _artifact(tmp_path, "raw", {})
    _record(tmp_path, raw=ref)
    stage, staging = ref.folder.parent, staging_dir(ref.folder)
    leftovers = [_age(_mkdir(folder / f".{kind}-{ref.key}-0badf00d"), OLD) for folder in (stage, staging)
                 for kind in ("tmp", "trash")]  # fmt: skip
    leftovers += [_age(_mkdir(stage / ".partial-0123456789abcdef"), OLD)]  # no checkpoint: nothing to resume
    stray = _age(_write(stage / ".partial-fedcba9876543210.lock", "{}"), OLD)
    kept = _age(_write(stage / ".partial-aaaaaaaaaaaaaaaa.lock", "{}"), OLD)  # its build's partial is there
    _age(_mkdir(staging / ".partial-aaaaaaaaaaaaaaaa"), 1.0)
    assert {p.resolve() for p in (*leftovers, stray)} == _stale(tmp_path)
    cleanup.remove(cleanup.unreferenced(tmp_path))
    assert sorted(p.name for p in stage.iterdir()) == sorted([ref.key, kept.name])
    assert [p.name for p in staging.iterdir()] == [".partial-aaaaaaaaaaaaaaaa"]


def test_gc_sets_an_artifact_aside_outside_its_stage_folder(tmp_path, monkeypatch):
    """Between gc's rename and its delete, a glob of the stage does not see the doomed artifact as ``.trash-``."""
    ref = _artifact(tmp_path, "pairs", {})
    seen: list[list[str]] = []
    rmtree = cleanup.shutil.rmtree
    monkeypatch.setattr(cleanup.shutil, "rmtree", lambda p, **kw: (seen.append(os.listdir(ref.folder.parent)),
                                                                   rmtree(p, **kw)))  # fmt: skip
    assert cleanup.remove(cleanup.unreferenced(tmp_path)) > 0
    assert seen == [[]] and not ref.folder.exists() and list(staging_dir(ref.folder).iterdir()) == []


def test_the_gc_command_takes_keep_partial_hours(tmp_path, capsys):
    partial = _partial(tmp_path, seal_age=10.0)
    cli.main(["gc", "--data-dir", str(tmp_path), "--dry-run"])
    assert str(partial) not in capsys.readouterr().out
    cli.main(["gc", "--data-dir", str(tmp_path), "--keep-partial-hours", "5"])
    assert f"removing {partial}" in capsys.readouterr().out and not partial.exists()


def test_gc_refuses_to_run_over_a_damaged_champion_record(tmp_path):
    """Rather than guess the champion (and list its model for removal), gc stops, naming the record."""
    raw = _artifact(tmp_path, "raw", {})
    record = artifacts_root(tmp_path) / "champion" / "champion.json"
    record.parent.mkdir(parents=True)
    record.write_text('{"model_key": ')
    with pytest.raises(ChampionDamaged, match="champion.json"):
        cleanup.unreferenced(tmp_path, keep_runs=0, min_age_hours=0)
    with pytest.raises(ChampionDamaged):
        cleanup.remove([raw.folder])
    assert verify(raw) == []
