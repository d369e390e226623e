"""The GPU worker's policies, proven where they can be on a CPU: the precision that runs resolved once (and
named in keys as before), fp32 master weights whatever the checkpoint, attention kernels that train the same
model or say so in the key, a fallback that runs before training, checkpoints sealed by process zero alone,
evaluation alike everywhere, batches flattened in numpy."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from sentence_transformers import SentenceTransformer

from tasks.evaluation.data import stsb_pairs
from tasks.evaluation.settings import EvalSettings
from tasks.models.encoding import encode_in_token_order
from tasks.models.precision import Precision, runs_as
from tasks.models.resolve import resolve_model
from tasks.negatives.strategies import MiningConfig, soft_negatives
from tasks.pairs.labels import pairs_for_loss
from tasks.stages import model_key_params
from tasks.training import attention, batches, tokens
from tasks.training.checkpoints import SEAL, CheckpointSeal
from tasks.training.losses import load_guide
from tasks.training.recipe import TrainRecipe, TrainRuntime, recipe_and_runtime
from tasks.training.throughput import measure_chunk_overhead
from tasks.training.trainer import train_model

ROOT = Path(__file__).resolve().parent.parent


def _gpu(monkeypatch, bf16: bool) -> None:
    """This process sees a CUDA GPU, with or without bf16 (nothing is run on it)."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: bf16)


def test_what_a_requested_precision_runs_as_on_the_cpu_and_on_each_gpu(monkeypatch):
    assert {runs_as(p) for p in ("fp32", "fp16", "bf16")} == {Precision.FP32}  # the CPU: fp32 whatever
    _gpu(monkeypatch, bf16=True)
    assert [runs_as(p) for p in ("fp32", "fp16", "bf16")] == [Precision.FP32, Precision.FP16, Precision.BF16]
    assert runs_as("bf16", device="cpu") is Precision.FP32  # a model on the CPU of a GPU machine
    _gpu(monkeypatch, bf16=False)
    assert runs_as("bf16") is Precision.FP16 and runs_as(Precision.BF16, "cuda:1") is Precision.FP16
    with pytest.raises(ValueError, match="parameter precision: 'fp8' is not one of"):
        Precision.parse("fp8", "precision")


def test_each_precision_names_its_dtype_trainer_flags_and_autocast():
    assert [p.mixed_precision for p in Precision] == ["no", "bf16", "fp16"]  # the models key's names
    assert [p.dtype for p in Precision] == [None, torch.bfloat16, torch.float16]
    assert Precision.FP32.trainer_flags == {"fp16": False, "bf16": False}
    assert Precision.BF16.trainer_flags == {"fp16": False, "bf16": True}
    assert Precision.FP16.trainer_flags == {"fp16": True, "bf16": False}
    with Precision.FP32.autocast("cpu"):
        assert not torch.is_autocast_enabled("cpu")
    with Precision.BF16.autocast("cpu"):
        assert torch.is_autocast_enabled("cpu") and torch.get_autocast_dtype("cpu") == torch.bfloat16


@pytest.mark.parametrize(
    "requested, bf16, trained, evaluated",
    [("fp16", True, "fp16", "fp16"), ("bf16", True, "bf16", "bf16"), ("bf16", False, "fp16", "fp16"),
     ("fp32", True, "no", "fp32")],
)  # fmt: skip
def test_keys_and_records_name_the_precision_that_runs_as_before(
    tiny_bert, monkeypatch, requested, bf16, trained, evaluated
):
    """The models key's "precision" is accelerate's name ("no", "fp16", "bf16"), evaluation records "fp32",
    "bf16" or "fp16", exactly the strings of before the precision was typed: no key moves."""
    _gpu(monkeypatch, bf16)
    params = model_key_params(resolve_model(str(tiny_bert)), TrainRecipe(precision=requested), TrainRuntime(), None)
    assert params["precision"] == trained and type(params["precision"]) is str
    record = EvalSettings(precision=requested).record()
    assert record["precision"] == evaluated and type(record["precision"]) is str


def test_the_half_dtypes_are_named_in_one_module():
    """Only tasks/models/precision.py maps a precision to torch's half dtypes; every other module asks it."""
    named = [
        str(path.relative_to(ROOT))
        for path in sorted((ROOT / "tasks").rglob("*.py"))
        if "torch.bfloat16" in path.read_text() or "torch.float16" in path.read_text()
    ]
    assert named == ["tasks/models/precision.py"]


def test_naming_a_precision_loads_no_torch():
    """Settings and the CLI name precisions; torch loads only when a dtype or an autocast is asked for."""
    code = (
        "import sys; from tasks.models.precision import Precision, runs_as; import tasks.evaluation.settings; "
        "Precision.BF16.mixed_precision; assert 'torch' not in sys.modules, 'torch imported'"
    )
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True)


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
    model, _ = attention.load_for_training(str(half), "auto", runs_as("fp16"))
    assert {p.dtype for p in model.parameters()} == {torch.float32}
    data = pairs_for_loss(nli_sample, "mnr")
    recipe, runtime = recipe_and_runtime(batch_size=8, warmup_steps=1, max_steps=2, eval_steps=0, checkpoint_steps=0)
    summary = train_model(str(half), data, stsb_pairs("validation", 20), recipe, runtime, tmp_path / "out")
    assert summary["steps"] == 2 and np.isfinite(summary["train_loss"])


def test_a_kernel_that_fails_its_probe_falls_back_to_sdpa_with_the_cause(tiny_bert, monkeypatch, caplog):
    """auto chose a flash kernel that cannot run (here: not installed): training goes on with SDPA, and the
    warning names the cause; asked for by name, the failure is the user's to see."""
    monkeypatch.setattr(attention, "attention_implementation", lambda *a: "flash_attention_2")
    with caplog.at_level(logging.WARNING, logger=attention.__name__):
        model, kernel = attention.load_for_training(str(tiny_bert), "auto", Precision.FP32)
    assert kernel == "default" and "flash_attention_2 failed" in caplog.text
    with pytest.raises(Exception):  # noqa: B017 - whatever transformers raises for a missing kernel
        attention.load_for_training(str(tiny_bert), "flash_attention_2", Precision.FP32)


def test_auto_never_picks_a_kernel_that_drops_attention_dropout_nor_one_in_fp32(monkeypatch):
    from transformers.utils import import_utils

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda *a: (9, 0))
    monkeypatch.setattr(import_utils, "is_flash_attn_4_available", lambda: True)
    assert attention.applies_attention_dropout("flash_attention_4") is False  # no dropout_p (here: not importable)
    assert attention.applies_attention_dropout("sdpa") and attention.applies_attention_dropout(None)
    choose = attention.attention_implementation
    assert choose("auto", Precision.BF16, attention_dropout=0.1) is None
    assert choose("auto", Precision.BF16, attention_dropout=0.0) == "flash_attention_4"
    assert choose("auto", Precision.FP16, attention_dropout=0.0) == "flash_attention_4"
    assert choose("auto", Precision.FP32, attention_dropout=0.0) is None
    assert choose("flash_attention_4", Precision.FP32) == "flash_attention_4"  # by name


def test_the_model_key_says_when_a_kernel_asked_for_by_name_drops_attention_dropout(tiny_bert):
    base = resolve_model(str(tiny_bert))
    assert attention.attention_dropout_of(base.location) == pytest.approx(0.1)
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
    assert json.loads((folder / SEAL).read_text())["step"] == 4


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
    cost = measure_chunk_overhead(model, Precision.FP32)
    assert isinstance(cost, int) and 0 <= cost <= 8192


def test_the_guide_reads_the_models_own_ids_when_their_vocabularies_match(tmp_path, tiny_bert):
    from sentence_transformers.losses import GISTEmbedLoss

    model = SentenceTransformer(str(tiny_bert))  # max_seq_length 64
    short = SentenceTransformer(str(tiny_bert))
    short.max_seq_length = 32
    short.save(str(tmp_path / "guide"))
    guide = load_guide(str(tmp_path / "guide"), model, runs_as("bf16"))
    assert guide.max_seq_length == 64 and next(guide.parameters()).dtype == torch.float32  # CPU: no half
    assert GISTEmbedLoss(model, guide).must_retokenize is False
