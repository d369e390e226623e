"""The GPU worker's policies, proven where they can be on a CPU: fp32 master weights whatever the checkpoint,
attention kernels that train the same model or say so in the key, a fallback that runs before training,
checkpoints sealed by process zero alone, evaluation alike everywhere, batches flattened in numpy."""

from __future__ import annotations

import logging
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from sentence_transformers import SentenceTransformer

from tasks.evaluation.data import stsb_pairs
from tasks.evaluation.settings import EvalSettings
from tasks.models.encoding import encode_in_token_order
from tasks.models.resolve import resolve_model
from tasks.negatives.strategies import MiningConfig, soft_negatives
from tasks.pairs.labels import pairs_for_loss
from tasks.stages import model_key_params
from tasks.training import batches, hardware, tokens
from tasks.training.checkpoints import SEAL, CheckpointSeal
from tasks.training.losses import load_guide
from tasks.training.recipe import TrainRecipe, TrainRuntime, recipe_and_runtime
from tasks.training.trainer import train_model


def test_flattened_batches_equal_the_models_own_flattener(tiny_bert, nli_sample):
    """Our numpy flattening builds exactly what transformers' DataCollatorWithFlattening builds from lists,
    with the keys sentence-transformers asks it for (positions, sequence index, flash attention bounds)."""
    from transformers import DataCollatorWithFlattening

    model = SentenceTransformer(str(tiny_bert))
    frame = soft_negatives(pairs_for_loss(nli_sample.head(120), "mnr"), nli_sample, MiningConfig())
    data = tokens.TokenizedData(tokens.tokenize_frame(frame, "mnr", model), tokens.tokenizer_spec(model))
    flattener = DataCollatorWithFlattening(return_seq_idx=True, return_flash_attn_kwargs=True, return_position_ids=True)
    collator = batches.build_collator(model, data, True, "cpu")
    collator.layout, collator.flattener = batches.Layout.FLATTENED, flattener
    rows = list(range(0, len(frame), 3))
    ours = collator(rows)
    texts = [ids for column in data.columns for ids in data.table.column(f"{column}_input_ids").take(rows).to_pylist()]
    stock = flattener([{"input_ids": ids} for ids in texts])
    stock.pop("labels")
    assert {k.removeprefix("chunk0_") for k in ours if k != "chunk0_restore"} == set(stock)
    for key, value in stock.items():
        mine = ours[f"chunk0_{key}"]
        if isinstance(value, int):
            assert mine == value, key
        else:
            assert mine.dtype == value.dtype and torch.equal(mine, value), key


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_a_base_model_saved_in_half_precision_trains_with_fp32_weights(tmp_path, tiny_bert, nli_sample, dtype):
    half = tmp_path / "half"
    SentenceTransformer(str(tiny_bert)).to(dtype).save(str(half))
    assert next(SentenceTransformer(str(half)).parameters()).dtype == dtype  # transformers 5 keeps the dtype
    model, _ = hardware.load_for_training(str(half), "auto")
    assert {p.dtype for p in model.parameters()} == {torch.float32}
    data = pairs_for_loss(nli_sample, "mnr")
    recipe, runtime = recipe_and_runtime(batch_size=8, warmup_steps=1, max_steps=2, eval_steps=0, checkpoint_steps=0)
    summary = train_model(str(half), data, stsb_pairs("validation", 20), recipe, runtime, tmp_path / "out")
    assert summary["steps"] == 2 and np.isfinite(summary["train_loss"])


def test_a_kernel_that_fails_its_probe_falls_back_to_sdpa_with_the_cause(tiny_bert, monkeypatch, caplog):
    """auto chose a flash kernel that cannot run (here: not installed): training goes on with SDPA, and the
    warning names the cause; asked for by name, the failure is the user's to see."""
    monkeypatch.setattr(hardware, "attention_implementation", lambda *a: "flash_attention_2")
    with caplog.at_level(logging.WARNING, logger=hardware.__name__):
        model, attention = hardware.load_for_training(str(tiny_bert), "auto")
    assert attention == "default" and "flash_attention_2 failed" in caplog.text
    with pytest.raises(Exception):  # noqa: B017 - whatever transformers raises for a missing kernel
        hardware.load_for_training(str(tiny_bert), "flash_attention_2")


def test_auto_never_picks_a_kernel_that_drops_attention_dropout_nor_one_in_fp32(monkeypatch):
    from transformers.utils import import_utils

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda *a: (9, 0))
    monkeypatch.setattr(hardware, "mixed_precision", lambda precision: "no" if precision == "fp32" else "bf16")
    monkeypatch.setattr(import_utils, "is_flash_attn_4_available", lambda: True)
    assert hardware.applies_attention_dropout("flash_attention_4") is False  # no dropout_p (here: not importable)
    assert hardware.applies_attention_dropout("sdpa") and hardware.applies_attention_dropout(None)
    assert hardware.attention_implementation("auto", "bf16", attention_dropout=0.1) is None
    assert hardware.attention_implementation("auto", "bf16", attention_dropout=0.0) == "flash_attention_4"
    assert hardware.attention_implementation("auto", "fp32", attention_dropout=0.0) is None
    assert hardware.attention_implementation("flash_attention_4", "fp32") == "flash_attention_4"  # by name


def test_the_model_key_says_when_a_kernel_asked_for_by_name_drops_attention_dropout(tiny_bert):
    base = resolve_model(str(tiny_bert))
    assert hardware.attention_dropout_of(base.location) == pytest.approx(0.1)
    plain = model_key_params(base, TrainRecipe(), TrainRuntime(), None)
    assert "attention_dropout" not in plain
    assert model_key_params(base, TrainRecipe(), TrainRuntime(attention="eager"), None) == plain
    flash = model_key_params(base, TrainRecipe(), TrainRuntime(attention="flash_attention_4"), None)
    assert flash == plain | {"attention_dropout": False}
    assert plain["precision"] == "no"  # what really runs here: fp32, whatever the recipe asks


def test_only_process_zero_seals_a_checkpoint(tmp_path):
    loss = torch.nn.Module()
    folder = tmp_path / "checkpoint-4"
    folder.mkdir()
    args = SimpleNamespace(output_dir=str(tmp_path))
    CheckpointSeal(loss).on_save(args, SimpleNamespace(global_step=4, is_world_process_zero=False), None)
    assert not (folder / SEAL).exists()
    CheckpointSeal(loss).on_save(args, SimpleNamespace(global_step=4, is_world_process_zero=True), None)
    assert (folder / SEAL).read_text() == "4"


def test_evaluation_runs_in_fp32_unless_asked_and_the_record_says_so():
    assert EvalSettings().precision == "fp32" and EvalSettings().record()["precision"] == "fp32"
    assert EvalSettings(precision="bf16").record()["precision"] == "fp32"  # the CPU encodes in fp32 whatever
    assert EvalSettings.from_record({"tasks": [], "limit": None}).precision == "fp32"  # records from before
    with pytest.raises(ValueError, match="parameter eval_precision"):
        EvalSettings(precision="fp8").check(lambda: False)


def test_several_processes_encode_the_same_vectors(tiny_bert):
    """The multi-process pool that several GPUs use, run here on two CPU processes."""
    model = SentenceTransformer(str(tiny_bert))
    texts = stsb_pairs("validation", 60)["sentence1"].tolist()
    alone = encode_in_token_order(model, texts, 16)
    pool = model.start_multi_process_pool(["cpu", "cpu"])
    try:
        pooled = encode_in_token_order(model, texts, 16, pool=pool)
    finally:
        model.stop_multi_process_pool(pool)
    np.testing.assert_allclose(pooled, alone, atol=1e-5)


def test_the_chunk_cost_is_measured_for_the_model(tiny_bert):
    model = SentenceTransformer(str(tiny_bert))
    cost = hardware.measure_chunk_overhead(model, "fp32")
    assert isinstance(cost, int) and 0 <= cost <= 8192


def test_the_guide_reads_the_models_own_ids_when_their_vocabularies_match(tmp_path, tiny_bert):
    from sentence_transformers.losses import GISTEmbedLoss

    model = SentenceTransformer(str(tiny_bert))  # max_seq_length 64
    short = SentenceTransformer(str(tiny_bert))
    short.max_seq_length = 32
    short.save(str(tmp_path / "guide"))
    guide = load_guide(str(tmp_path / "guide"), model, "bf16")
    assert guide.max_seq_length == 64 and next(guide.parameters()).dtype == torch.float32  # CPU: no half
    assert GISTEmbedLoss(model, guide).must_retokenize is False
