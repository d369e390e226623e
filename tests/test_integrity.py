"""Nothing silently wrong: damaged embedding shards and checkpoints are found, set aside and rebuilt."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sentence_transformers import SentenceTransformer

from tasks.evaluation.data import stsb_pairs
from tasks.models.resolve import resolve_model
from tasks.negatives.embeddings import DAMAGED, SHARDS, _store, sidecar
from tasks.negatives.strategies import MiningConfig, mine_semi_hard
from tasks.pairs.labels import mnr_pairs, pairs_for_loss
from tasks.training.checkpoints import SEAL, last_whole_checkpoint, write_seal
from tasks.training.recipe import recipe_and_runtime
from tasks.training.trainer import train_model
from tests.test_training import _CountSteps, _Interrupt

MINING = MiningConfig(strategy="semi-hard", range_max=20, margin=0.05)
MINER = "sentence-transformers/all-MiniLM-L6-v2"  # the bundled copy: 91 real negatives from the first 300 rows


def _flip(path: Path, size: int, at: float = 0.5) -> None:
    """Invert ``size`` bytes (or the whole file, if smaller) starting ``at`` its length."""
    data = bytearray(path.read_bytes())
    size = min(size, len(data))
    start = min(int(len(data) * at), len(data) - size)
    data[start : start + size] = bytes(b ^ 0xFF for b in data[start : start + size])
    path.write_bytes(bytes(data))


def _mine(data_dir: Path, model, nli: pd.DataFrame) -> tuple[pd.DataFrame, int]:
    triplets, facts = mine_semi_hard(mnr_pairs(nli), nli, model, data_dir, MINING)
    return triplets, facts["encoded_texts"]


@pytest.fixture(scope="module")
def clean(tmp_path_factory, nli_sample) -> tuple[pd.DataFrame, int]:
    """A clean run's triplets, and how many texts it encoded (all of them: its store started empty)."""
    return _mine(tmp_path_factory.mktemp("clean"), resolve_model(MINER), nli_sample)


def _one_shard(data_dir: Path, model) -> Path:
    shards = sorted(_store(data_dir, model).glob(SHARDS))
    assert len(shards) == 1
    return shards[0]


@pytest.mark.parametrize(
    "damage",
    [
        lambda shard: _flip(shard, 16 * 1024),
        lambda shard: _flip(shard, 64, at=0.3),
        lambda shard: shard.write_bytes(shard.read_bytes()[: shard.stat().st_size // 2]),  # truncated
    ],
    ids=["16KB-flipped", "64B-flipped", "truncated"],
)
def test_a_damaged_shard_is_set_aside_and_mining_equals_a_clean_run(tmp_path, nli_sample, clean, damage, caplog):
    model = resolve_model(MINER)
    _mine(tmp_path, model, nli_sample)
    shard = _one_shard(tmp_path, model)
    damage(shard)
    with caplog.at_level("WARNING"):
        triplets, encoded = _mine(tmp_path, model, nli_sample)
    pd.testing.assert_frame_equal(triplets, clean[0])
    assert encoded == clean[1]  # every text of the damaged shard encoded again
    assert str(shard) in caplog.text and "does not match its checksum" in caplog.text
    assert (shard.parent / (DAMAGED + shard.name)).exists() and not shard.exists()  # kept aside, never read
    again, encoded = _mine(tmp_path, model, nli_sample)  # the new shard serves the next run
    assert encoded == 0 and caplog.text.count("set aside") == 1
    pd.testing.assert_frame_equal(again, clean[0])


def test_a_shard_from_before_checksums_is_encoded_again_not_adopted(tmp_path, nli_sample, clean, caplog):
    """Its bytes cannot be checked (the flip the issue found was in such a shard), so it is replaced."""
    model = resolve_model(MINER)
    _mine(tmp_path, model, nli_sample)
    shard = _one_shard(tmp_path, model)
    sidecar(shard).unlink()
    with caplog.at_level("WARNING"):
        triplets, encoded = _mine(tmp_path, model, nli_sample)
    assert str(shard) in caplog.text and "no checksum" in caplog.text
    assert encoded == clean[1] and not shard.exists()
    pd.testing.assert_frame_equal(triplets, clean[0])


def test_an_unreadable_checksum_is_no_checksum_to_trust(tmp_path, nli_sample, clean, caplog):
    model = resolve_model(MINER)
    _mine(tmp_path, model, nli_sample)
    shard = _one_shard(tmp_path, model)
    sidecar(shard).write_text("")
    with caplog.at_level("WARNING"):
        triplets, encoded = _mine(tmp_path, model, nli_sample)
    assert str(shard) in caplog.text and encoded == clean[1]
    pd.testing.assert_frame_equal(triplets, clean[0])


def test_a_flipped_sealed_checkpoint_is_not_resumed_from(tmp_path, tiny_bert, nli_sample, caplog):
    """4 KB flipped in the sealed weights: the rerun warns naming the file, starts afresh, and its model is
    the uninterrupted run's."""
    data = pairs_for_loss(nli_sample, "mnr")
    config = recipe_and_runtime(
        loss="mnr", batch_size=8, warmup_steps=1, eval_steps=0, max_steps=10, checkpoint_steps=3
    )
    sts = stsb_pairs("validation", 20)
    train_model(str(tiny_bert), data, sts, *config, tmp_path / "straight")
    with pytest.raises(RuntimeError, match="interrupted"):
        train_model(str(tiny_bert), data, sts, *config, tmp_path / "resumed", callbacks=[_Interrupt(7)])
    checkpoint = tmp_path / "resumed" / "_trainer" / "checkpoint-6"
    weights = checkpoint / "model.safetensors"
    _flip(weights, 4096)

    counter = _CountSteps()
    with caplog.at_level("WARNING"):
        resumed = train_model(str(tiny_bert), data, sts, *config, tmp_path / "resumed", callbacks=[counter])
    assert str(weights) in caplog.text and "not resuming" in caplog.text
    assert resumed["resumed_from"] is None and counter.steps == list(range(1, 11))
    texts = ["a man is playing a guitar", "the cat sleeps"]
    after_straight = SentenceTransformer(str(tmp_path / "straight" / "model")).encode(texts)
    after_rerun = SentenceTransformer(str(tmp_path / "resumed" / "model")).encode(texts)
    np.testing.assert_allclose(after_rerun, after_straight, atol=1e-5)


def _checkpoint(trainer_dir: Path, step: int, sealed: bool = True) -> Path:
    folder = trainer_dir / f"checkpoint-{step}"
    folder.mkdir(parents=True)
    (folder / "model.safetensors").write_bytes(np.random.default_rng(step).bytes(16 * 1024))
    (folder / "trainer_state.json").write_text(json.dumps({"global_step": step}))
    if sealed:
        write_seal(folder, step)
    return folder


def test_an_intact_checkpoint_is_resumed_from(tmp_path, caplog):
    newest = _checkpoint(tmp_path, 6)
    with caplog.at_level("WARNING"):
        assert last_whole_checkpoint(tmp_path) == newest
    assert not caplog.text
    seal = json.loads((newest / SEAL).read_text())
    assert seal["step"] == 6 and set(seal["files"]) == {"model.safetensors", "trainer_state.json"}


def test_a_damaged_checkpoint_gives_way_to_the_previous_whole_one(tmp_path, caplog):
    older, newest = _checkpoint(tmp_path, 3), _checkpoint(tmp_path, 6)
    _checkpoint(tmp_path, 9, sealed=False)  # a kill while writing: removed, as before
    _flip(newest / "model.safetensors", 4096)
    with caplog.at_level("WARNING"):
        assert last_whole_checkpoint(tmp_path) == older
    assert str(newest / "model.safetensors") in caplog.text
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint-3"]


@pytest.mark.parametrize(
    "damage",
    [
        lambda folder: (folder / "trainer_state.json").unlink(),
        lambda folder: (folder / SEAL).write_text("6"),  # a seal from before checksums: nothing to check against
        lambda folder: (folder / SEAL).write_text('{"step": 6, "fi'),  # half a seal
    ],
    ids=["file-missing", "old-seal", "half-seal"],
)
def test_a_checkpoint_that_cannot_be_checked_is_not_resumed_from(tmp_path, caplog, damage):
    damage(_checkpoint(tmp_path, 6))
    with caplog.at_level("WARNING"):
        assert last_whole_checkpoint(tmp_path) is None
    assert "checkpoint-6" in caplog.text and not (tmp_path / "checkpoint-6").exists()
