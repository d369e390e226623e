"""On a real GPU (``make test-gpu``): collected everywhere, skipped where CUDA is not available.

What the CPU suite cannot prove: the anchors in the evaluation precision, each attention path's loss
and gradients against the stock collator's, dropout active in training, each precision training, base
models saved in half precision, a killed run resuming, and two processes under torchrun.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sentence_transformers import SentenceTransformer
from transformers import TrainerCallback

from tasks.evaluation.data import stsb_pairs
from tasks.evaluation.evaluate import evaluate_model
from tasks.evaluation.settings import EvalSettings
from tasks.models.encoding import load_model
from tasks.models.precision import Precision, runs_as
from tasks.models.resolve import resolve_model
from tasks.negatives.strategies import MiningConfig, soft_negatives
from tasks.pairs.labels import pairs_for_loss
from tasks.training import batches, tokens
from tasks.training.attention import applies_attention_dropout, load_for_training
from tasks.training.losses import GroupedForwardLoss, build_loss
from tasks.training.recipe import recipe_and_runtime
from tasks.training.trainer import train_model

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (make test-gpu on a GPU worker)"),
]


def _triplets(nli_sample, rows: int):
    return soft_negatives(pairs_for_loss(nli_sample.head(rows), "mnr"), nli_sample, MiningConfig())[
        ["anchor", "positive", "negative"]
    ]


def test_the_anchors_hold_on_the_gpu_in_the_evaluation_precision(tmp_path):
    model = load_model(resolve_model("sentence-transformers/all-MiniLM-L6-v2"), precision="fp32")
    assert model.device.type == "cuda" and next(model.parameters()).dtype == torch.float32
    metrics = evaluate_model(model, EvalSettings(("Banking77Classification",)), tmp_path)
    assert metrics["stsb_test_spearman"] == pytest.approx(0.8203, abs=5e-4)
    assert metrics["stsb_validation_spearman"] == pytest.approx(0.8672, abs=5e-4)
    assert metrics["banking77_accuracy"] == pytest.approx(0.8004, abs=5e-4)


def test_the_precision_that_runs_on_this_gpu_casts_models_and_names_records(tiny_bert):
    """bf16 where the GPU supports it (Ampere and newer), else fp16: mining's models, the GIST guide and the
    evaluation record all follow the one resolution."""
    from tasks.training.losses import load_guide

    half = Precision.BF16 if torch.cuda.is_bf16_supported() else Precision.FP16
    assert [runs_as(p) for p in ("fp32", "fp16", "bf16")] == [Precision.FP32, Precision.FP16, half]
    assert runs_as("bf16", device="cpu") is Precision.FP32
    mining = load_model(resolve_model(str(tiny_bert)))
    assert mining.device.type == "cuda" and next(mining.parameters()).dtype == half.dtype
    assert next(load_model(resolve_model(str(tiny_bert)), precision="fp32").parameters()).dtype == torch.float32
    trained = SentenceTransformer(str(tiny_bert), device="cuda")
    assert next(load_guide(str(tiny_bert), trained, runs_as("bf16")).parameters()).dtype == half.dtype
    assert EvalSettings(tasks=(), precision="bf16").record()["precision"] == half.value


def _one_step(model, frame, ours: bool, layout: batches.Layout):
    """Loss and gradients of one batch: the stock collator and loss, or our ids, layout and GroupedForwardLoss."""
    from sentence_transformers import SentenceTransformerTrainer
    from sentence_transformers.base.data_collator import BaseDataCollator

    model.zero_grad()
    loss = build_loss(model, "mnr")
    if ours:
        data = tokens.TokenizedData(tokens.tokenize_frame(frame, "mnr", model), tokens.tokenizer_spec(model))
        collator = batches.build_collator(model, data, True, "cuda")
        assert collator.layout is layout
        batch = collator(list(range(len(frame))))
        loss = GroupedForwardLoss(loss, len(data.columns))
    else:
        batch = BaseDataCollator(preprocess_fn=model.preprocess)(frame.to_dict("records"))
    batch = {k: v.to("cuda") if hasattr(v, "to") else v for k, v in batch.items()}
    features, labels = SentenceTransformerTrainer.collect_features(None, batch)
    value = loss(features, labels)
    value.backward()
    return value.item(), {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


@pytest.mark.parametrize("attention", ["sdpa", "flash_attention_4"])
def test_each_attention_path_gives_the_stock_loss_and_gradients(tiny_bert, nli_sample, attention):
    """SDPA computes on length-grouped chunks, flash-attn-4 on one flat sequence; dropout off, both equal
    the stock collator's padded columns."""
    if attention != "sdpa" and not _importable(attention):
        pytest.skip(f"{attention} is not installed")
    kwargs = {"attn_implementation": attention, "dtype": torch.float32}
    model = SentenceTransformer(str(tiny_bert), device="cuda", model_kwargs=kwargs)
    model.eval()  # no dropout: both paths compute the same function
    frame = _triplets(nli_sample, 64)
    layout = batches.Layout.GROUPED if attention == "sdpa" else batches.Layout.FLATTENED
    with (Precision.BF16 if attention != "sdpa" else Precision.FP32).autocast("cuda"):
        stock, stock_grads = _one_step(model, frame, False, layout)
        ours, our_grads = _one_step(model, frame, True, layout)
    tolerance = 1e-4 if attention == "sdpa" else 2e-2  # flash runs in bf16
    assert ours == pytest.approx(stock, rel=tolerance)
    for name, grad in stock_grads.items():
        assert (our_grads[name] - grad).norm() <= tolerance * grad.norm() + 1e-6, name


def _importable(attention: str) -> bool:
    try:
        from transformers.modeling_flash_attention_utils import lazy_import_flash_attention

        lazy_import_flash_attention(attention)
        return True
    except Exception:
        return False


def test_dropout_is_active_in_training_through_our_batches(tiny_bert, nli_sample):
    model, attention = load_for_training(str(tiny_bert), "auto", runs_as("bf16"))
    assert applies_attention_dropout(attention)
    frame = _triplets(nli_sample, 32)
    data = tokens.TokenizedData(tokens.tokenize_frame(frame, "mnr", model), tokens.tokenizer_spec(model))
    batch = batches.build_collator(model, data, True, "cuda")(list(range(len(frame))))
    batch = {k: v.to("cuda") if hasattr(v, "to") else v for k, v in batch.items()}
    from sentence_transformers import SentenceTransformerTrainer

    chunks = batches.ChunkedBatch.from_features(SentenceTransformerTrainer.collect_features(None, batch)[0])
    model.train()
    first = torch.cat([model(dict(c))["sentence_embedding"] for c in chunks.chunks])
    second = torch.cat([model(dict(c))["sentence_embedding"] for c in chunks.chunks])
    assert not torch.allclose(first, second)  # dropout draws differ
    model.eval()
    first = torch.cat([model(dict(c))["sentence_embedding"] for c in chunks.chunks])
    second = torch.cat([model(dict(c))["sentence_embedding"] for c in chunks.chunks])
    torch.testing.assert_close(first, second)


@pytest.mark.parametrize("precision", ["fp16", "bf16", "fp32"])
def test_each_precision_trains(tmp_path, tiny_bert, nli_sample, precision):
    settings = dict(precision=precision, batch_size=16, warmup_steps=1, max_steps=4, eval_steps=0)
    summary = train_model(str(tiny_bert), _triplets(nli_sample, 300), stsb_pairs("validation", 20),
                          *recipe_and_runtime(**settings), tmp_path)  # fmt: skip
    assert summary["steps"] == 4 and np.isfinite(summary["train_loss"]) and summary["device"].startswith("cuda")
    assert summary["mixed_precision"] == {"fp32": "no"}.get(precision, precision)  # an H100/H200 runs bf16
    assert summary["mfu"] is None or summary["mfu"] > 0


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_a_base_model_saved_in_half_precision_trains(tmp_path, tiny_bert, nli_sample, dtype):
    half = tmp_path / "half"
    SentenceTransformer(str(tiny_bert)).to(dtype).save(str(half))
    settings = dict(precision="fp16", batch_size=16, warmup_steps=1, max_steps=3, eval_steps=0)
    summary = train_model(str(half), _triplets(nli_sample, 300), stsb_pairs("validation", 20),
                          *recipe_and_runtime(**settings), tmp_path / "out")  # fmt: skip
    assert summary["steps"] == 3 and np.isfinite(summary["train_loss"])


class _Interrupt(TrainerCallback):
    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step == 5:
            raise RuntimeError("interrupted")


def test_a_killed_training_resumes_on_the_gpu(tmp_path, tiny_bert, nli_sample):
    data, sts = _triplets(nli_sample, 300), stsb_pairs("validation", 20)
    settings = dict(precision="bf16", batch_size=16, warmup_steps=1, max_steps=8, eval_steps=0, checkpoint_steps=3)
    with pytest.raises(RuntimeError, match="interrupted"):
        train_model(str(tiny_bert), data, sts, *recipe_and_runtime(**settings), tmp_path, callbacks=[_Interrupt()])
    resumed = train_model(str(tiny_bert), data, sts, *recipe_and_runtime(**settings), tmp_path)
    assert resumed["resumed_from"] == "checkpoint-3" and resumed["steps"] == 8


@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="two processes need two GPUs")
def test_two_processes_train_under_torchrun(tmp_path, tiny_bert, nli_sample):
    from tasks.training.distributed import train_distributed

    settings = dict(batch_size=32, warmup_steps=1, max_steps=4, eval_steps=0, processes=2)
    summary = train_distributed(str(tiny_bert), _triplets(nli_sample, 300), stsb_pairs("validation", 20),
                                *recipe_and_runtime(**settings), tmp_path)  # fmt: skip
    assert summary["processes"] == 2 and summary["per_device_batch"] == 16 and summary["steps"] == 4
