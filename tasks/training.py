"""Train a sentence-embedding model with SentenceTransformerTrainer around the chosen loss.

Reads like the seed notebook: model, data, loss, evaluator, arguments, trainer, train, save.
The data are token ids (the tokens stage), so the training loop only pads, and the model computes
on real tokens (flash attention's unpadding, else length-grouped chunks: ``tasks/batches.py``).
On CUDA: mixed precision, fused AdamW, TF32, data-loader workers with pinned memory; CPU trains
in fp32 as before. No experiment tracker unless ``report_to`` asks.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from safetensors.torch import load_file, save_file
from transformers import TrainerCallback, set_seed

from tasks import tokens
from tasks.labels import RANKING

log = logging.getLogger(__name__)
LOSS_HEAD = "loss_head.safetensors"
SEAL = "checkpoint.sealed"


@dataclass(frozen=True)
class TrainConfig:
    """The seed's settings by default: batch 32, 1 epoch, warmup 100, evaluation every 100 steps."""

    loss: str = "mnr"
    epochs: float = 1.0
    batch_size: int = 32
    learning_rate: float = 5e-5
    warmup_steps: int = 100
    eval_steps: int = 100
    max_steps: int = -1
    seed: int = 42
    report_to: str = "none"
    precision: str = "fp16"  # on CUDA: "fp16", "bf16" (fp16 where bf16 is unsupported) or "fp32"; CPU: fp32
    batch_sampler: str = "batch_sampler"  # or "no_duplicates": no text twice in a batch (MNR)
    # > 0 with mnr: CachedMultipleNegativesRankingLoss with this mini batch; 0: plain MNR;
    # -1: plain MNR when the batch fits in GPU memory, else the cached loss with mini batches of 32
    mini_batch_size: int = 0
    checkpoint_steps: int = 500  # a checkpoint every N steps, to resume an interrupted run (0: none)
    processes: int = 0  # data-parallel training processes; 0: one per GPU when there are several, else 1
    unpad: bool = True  # compute on real tokens: flash attention's unpadding, else length-grouped chunks
    attention: str = "auto"  # "auto": flash attention where installed on CUDA, else SDPA; or a transformers name
    compile: bool = False  # torch.compile the model (measured in bench/training_throughput.py)
    dataloader_workers: int = -1  # -1: 2 on CUDA (with pinned memory), 0 on CPU
    matryoshka_dims: tuple[int, ...] = ()  # the loss inside MatryoshkaLoss at these dimensions; (): not wrapped

    def check(self) -> None:
        if self.precision not in ("fp16", "bf16", "fp32"):
            raise ValueError(f"parameter precision: {self.precision!r} is not 'fp16', 'bf16' or 'fp32'")
        if self.batch_sampler not in ("batch_sampler", "no_duplicates"):
            raise ValueError(
                f"parameter batch_sampler: {self.batch_sampler!r} is not 'batch_sampler' or 'no_duplicates'"
            )
        if self.mini_batch_size > 0 and self.loss not in RANKING:
            raise ValueError("parameter mini_batch_size: the cached losses apply to loss 'mnr' or 'gist' only")
        if self.mini_batch_size < -1:
            raise ValueError(f"parameter mini_batch_size: -1 (auto), 0 (plain) or a size, got {self.mini_batch_size}")
        if self.attention not in ATTENTION:
            raise ValueError(f"parameter attention: {self.attention!r} is not one of {ATTENTION}")
        check_matryoshka_dims(self.matryoshka_dims, self.loss)


def check_matryoshka_dims(
    dims: tuple[int, ...], loss: str, model_dimension: int | None = None, parameter: str = "matryoshka_dims"
) -> None:
    """Positive, distinct, within the model's dimension (when known), and not with SoftmaxLoss, whose
    classifier reads the full embedding."""
    if not dims:
        return
    if loss == "softmax":
        raise ValueError(f"parameter {parameter}: SoftmaxLoss's classifier needs the full dimension; use another loss")
    if any(isinstance(d, bool) or not isinstance(d, int) or d < 1 for d in dims) or len(set(dims)) != len(dims):
        raise ValueError(f"parameter {parameter}: need distinct positive integers, got {list(dims)}")
    if model_dimension is not None and max(dims) > model_dimension:
        raise ValueError(
            f"parameter {parameter}: {max(dims)} is above the model's embedding dimension {model_dimension}"
        )


ATTENTION = ("auto", "sdpa", "eager", "flash_attention_2", "flash_attention_3", "flash_attention_4")
CACHED_MINI_BATCH = 32  # the cached loss's mini batch when "auto" finds that a batch would not fit


def mixed_precision(precision: str) -> str:
    """What actually runs: mixed precision only on CUDA, bf16 only where the GPU supports it."""
    import torch

    if not torch.cuda.is_available() or precision == "fp32":
        return "no"
    if precision == "bf16" and torch.cuda.is_bf16_supported():
        return "bf16"
    return "fp16"


def device_name() -> str:
    import torch

    return f"cuda ({torch.cuda.get_device_name(0)})" if torch.cuda.is_available() else "cpu"


def build_loss(model, loss: str, mini_batch_size: int = 0, guide=None):
    """SoftmaxLoss(3 labels), CosineSimilarityLoss, (Cached)MultipleNegativesRankingLoss or
    (Cached)GISTEmbedLoss, whose ``guide`` model drops in-batch negatives it scores above the positive."""
    from sentence_transformers import losses

    if loss == "gist":
        if guide is None:
            raise ValueError("loss 'gist' needs a guide model")
        if mini_batch_size > 0:
            return losses.CachedGISTEmbedLoss(model, guide, mini_batch_size=mini_batch_size)
        return losses.GISTEmbedLoss(model, guide)
    if loss == "mnr" and mini_batch_size > 0:
        return losses.CachedMultipleNegativesRankingLoss(model, mini_batch_size=mini_batch_size)

    if loss == "softmax":
        return losses.SoftmaxLoss(model, embedding_dimension=model.get_embedding_dimension(), num_labels=3)
    if loss == "cosine":
        return losses.CosineSimilarityLoss(model)
    if loss == "mnr":
        return losses.MultipleNegativesRankingLoss(model)
    raise ValueError(f"unknown loss {loss!r}")


def matryoshka(model, loss, dims: tuple[int, ...]):
    """``loss`` inside sentence-transformers' MatryoshkaLoss: the model runs once per batch, and the loss is
    summed over the embedding truncated to each dimension (ours or the library's chunks alike)."""
    from sentence_transformers import losses

    if not dims:
        return loss
    check_matryoshka_dims(dims, "", model.get_embedding_dimension())
    return losses.MatryoshkaLoss(model, loss, matryoshka_dims=list(dims))


def training_columns(train: pd.DataFrame, loss: str) -> list[str]:
    """The columns the loss reads, in the order it reads them (negative last, when mined)."""
    label = [c for c in tokens.LABEL_COLUMNS if c in train.columns and loss not in RANKING]
    return tokens.text_columns(train, loss) + label


def attention_implementation(requested: str) -> str | None:
    """The attention kernel to load the model with: flash attention where it is installed and the GPU
    can run it (sentence-transformers then unpads text by itself), else the model's default (SDPA)."""
    import torch

    if requested != "auto":
        return requested
    if not torch.cuda.is_available():
        return None
    from transformers.utils import import_utils

    major = torch.cuda.get_device_capability()[0]
    for name, check, min_major in (
        ("flash_attention_4", "is_flash_attn_4_available", 9),
        ("flash_attention_3", "is_flash_attn_3_available", 9),
        ("flash_attention_2", "is_flash_attn_2_available", 8),
    ):
        if major >= min_major and getattr(import_utils, check, lambda: False)():
            return name
    return None


def load_for_training(model_location: str, attention: str):
    """The SentenceTransformer to train; a flash-attention build that fails to load falls back to SDPA."""
    from sentence_transformers import SentenceTransformer

    implementation = attention_implementation(attention)
    if implementation is None:
        return SentenceTransformer(model_location, trust_remote_code=False), "default"
    try:
        kwargs = {"attn_implementation": implementation}
        return SentenceTransformer(model_location, trust_remote_code=False, model_kwargs=kwargs), implementation
    except (ImportError, ValueError, RuntimeError) as exc:
        if attention != "auto":
            raise
        log.warning("attention %s unavailable (%s); using the default", implementation, exc)
        return SentenceTransformer(model_location, trust_remote_code=False), "default"


def load_guide(location: str | None, device):
    """GISTEmbedLoss's guide: frozen, in evaluation mode, on the training model's device."""
    from sentence_transformers import SentenceTransformer

    if location is None:
        raise ValueError("loss 'gist' needs a guide model (parameter miner_model)")
    guide = SentenceTransformer(location, device=str(device), trust_remote_code=False)
    guide.eval()
    for parameter in guide.parameters():
        parameter.requires_grad_(False)
    return guide


def activation_bytes(model, tokens_per_step: float) -> float:
    """Rough activation memory of one training step: about 34 bytes per token, layer and hidden unit
    in 16-bit precision (Korthikanti et al., 2022, without the attention matrix that SDPA never stores)."""
    config = model[0].auto_model.config
    layers = getattr(config, "num_hidden_layers", 12)
    hidden = getattr(config, "hidden_size", 768)
    return 34.0 * tokens_per_step * layers * hidden


def resolve_mini_batch(config: TrainConfig, model, data: tokens.TokenizedData) -> int:
    """The cached loss only when asked, or, with "auto" (-1), when a plain batch would not fit."""
    import torch

    if config.mini_batch_size >= 0 or config.loss not in RANKING:
        return max(0, config.mini_batch_size)
    if not torch.cuda.is_available():
        return 0
    per_row = sum(float(np.percentile(v, 99)) for v in tokens.token_lengths(data.table).values())
    weights = 16.0 * sum(p.numel() for p in model.parameters())  # weights, gradients, two Adam moments
    free = torch.cuda.mem_get_info()[0]
    needed = activation_bytes(model, per_row * config.batch_size) + weights
    return 0 if needed < 0.7 * free else CACHED_MINI_BATCH


# Dense fp16/bf16 tensor-core peak, TFLOP/s, by GPU name: the denominator of model FLOPs utilisation.
PEAK_TFLOPS = {"H200": 989.0, "H100": 989.0, "A100": 312.0, "L40S": 362.0, "L4": 121.0, "A10": 125.0, "V100": 125.0}


def training_flops_per_token(model) -> float:
    """6 x non-embedding parameters (forward and backward), the usual estimate for a dense transformer.

    Embedding tables are lookups, not matrix products: counting them would put a small model's
    utilisation above 100% (a 32-wide BERT's 30,522-row table is 98% of its parameters).
    """
    import torch

    lookups = {id(p) for m in model.modules() if isinstance(m, torch.nn.Embedding) for p in m.parameters()}
    return 6.0 * sum(p.numel() for p in model.parameters() if id(p) not in lookups)


def throughput(model, data: tokens.TokenizedData, samples: int, seconds: float, pad_ratio: float | None) -> dict:
    """Samples and real tokens per second, padding, and on a known GPU model FLOPs utilisation."""
    import torch

    real = sum(int(v.sum()) for v in tokens.token_lengths(data.table).values())
    tokens_per_sample = real / max(1, len(data))
    out = {
        "samples_per_second": round(samples / seconds, 2),
        "tokens_per_second": round(samples * tokens_per_sample / seconds, 1),
        "tokens_per_sample": round(tokens_per_sample, 1),
        "padded_tokens_per_real": pad_ratio,
        "mfu": None,
    }
    if torch.cuda.is_available():
        name = torch.cuda.get_device_name(0)
        peak = next((v for k, v in PEAK_TFLOPS.items() if k in name), None)
        if peak:
            out["mfu"] = round(training_flops_per_token(model) * out["tokens_per_second"] / (peak * 1e12), 4)
    return out


class CheckpointSeal(TrainerCallback):
    """Completes each checkpoint: SoftmaxLoss's classifier (not part of the model, so the Trainer
    leaves it out) and then a seal file, written last, that marks the checkpoint as whole."""

    def __init__(self, loss) -> None:
        self.loss = loss

    def on_save(self, args, state, control, **kwargs):
        folder = Path(args.output_dir) / f"checkpoint-{state.global_step}"
        head = loss_head(self.loss)
        if head:
            save_file(head, str(folder / LOSS_HEAD))
        (folder / SEAL).write_text(str(state.global_step))


def last_whole_checkpoint(folder: Path) -> Path | None:
    """The newest sealed checkpoint; unsealed ones (a kill while writing) are removed."""
    if not folder.is_dir():
        return None
    checkpoints = sorted(folder.glob("checkpoint-*"), key=lambda p: int(p.name.split("-")[-1]))
    for partial in [p for p in checkpoints if not (p / SEAL).exists()]:
        shutil.rmtree(partial, ignore_errors=True)
    sealed = [p for p in checkpoints if (p / SEAL).exists()]
    return sealed[-1] if sealed else None


def loss_head(loss) -> dict:
    """The loss's own weights (SoftmaxLoss's classifier), without the model's."""
    from tasks.batches import inner_loss

    loss = inner_loss(loss)
    return {k: v.detach().contiguous() for k, v in loss.state_dict().items() if not k.startswith(("model.", "guide."))}


def train_model(
    model_location: str,
    train: pd.DataFrame | tokens.TokenizedData,
    sts_validation: pd.DataFrame,
    config: TrainConfig,
    out_dir: Path,
    callbacks: list | None = None,
    guide_location: str | None = None,
) -> dict:
    """Train and save to ``out_dir/model``; returns the log history and throughput.

    ``train`` is token ids from the tokens stage (checked against the model's tokenizer), or texts,
    which are tokenised here first with the same function. ``guide_location`` is GISTEmbedLoss's guide.
    """
    import torch
    from sentence_transformers import SentenceTransformerTrainer
    from sentence_transformers.evaluation import EmbeddingSimilarityEvaluator
    from sentence_transformers.training_args import SentenceTransformerTrainingArguments

    from tasks import batches

    os.environ.setdefault("WANDB_DISABLED", "true")
    cuda = torch.cuda.is_available()
    precision = mixed_precision(config.precision)

    # Model: the base model, on the GPU when there is one, with flash attention where installed
    model, attention = load_for_training(model_location, config.attention)

    # Data: token ids in the loss's column order; made here from texts if not given
    spec = tokens.tokenizer_spec(model)
    data = train if isinstance(train, tokens.TokenizedData) else None
    if data is None:
        data = tokens.TokenizedData(tokens.tokenize_frame(train, config.loss, model), spec)
    data.check_against(spec)
    dataset = batches.token_dataset(data)

    # Loss (seeded first: SoftmaxLoss draws its classifier's initial weights); the cached loss only
    # when asked or when a batch would not fit
    set_seed(config.seed)
    mini_batch = resolve_mini_batch(config, model, data)
    guide = load_guide(guide_location, model.device) if config.loss == "gist" else None
    loss = build_loss(model, config.loss, mini_batch, guide)
    grouped = config.unpad and mini_batch == 0 and config.loss != "gist"  # GIST embeds each column itself
    collator = batches.build_collator(model, data, grouped, "cuda" if cuda else "cpu")
    train_loss = batches.GroupedForwardLoss(loss) if collator.mode != "columns" else loss
    train_loss = matryoshka(model, train_loss, config.matryoshka_dims)

    # Evaluator: STS-B validation, Spearman of cosine similarity against gold / 5
    evaluator = EmbeddingSimilarityEvaluator(
        sentences1=sts_validation["sentence1"].tolist(),
        sentences2=sts_validation["sentence2"].tolist(),
        scores=(sts_validation["score"] / 5.0).tolist(),
        main_similarity="cosine",
        name="sts-dev",
        write_csv=False,
    )

    # Arguments: the seed's recipe by default; mixed precision, fused AdamW, TF32 and loader workers
    # on CUDA only; checkpoints for resuming
    workers = config.dataloader_workers if config.dataloader_workers >= 0 else (2 if cuda else 0)
    args = SentenceTransformerTrainingArguments(
        output_dir=str(out_dir / "_trainer"),
        num_train_epochs=config.epochs,
        max_steps=config.max_steps,
        per_device_train_batch_size=config.batch_size,
        per_device_eval_batch_size=config.batch_size,
        learning_rate=config.learning_rate,
        warmup_steps=0.1 if config.warmup_steps < 0 else config.warmup_steps,  # below 1: a share of all steps
        fp16=precision == "fp16",
        bf16=precision == "bf16",
        optim="adamw_torch_fused",  # transformers' default with torch >= 2.8, named here because it matters
        tf32=True if cuda and torch.cuda.get_device_capability()[0] >= 8 else None,
        dataloader_num_workers=workers,
        dataloader_pin_memory=cuda,
        dataloader_persistent_workers=workers > 0,
        torch_compile=config.compile,
        batch_sampler=batches.IdsNoDuplicatesBatchSampler
        if config.batch_sampler == "no_duplicates"
        else "batch_sampler",
        eval_strategy="steps" if config.eval_steps > 0 else "no",
        eval_steps=config.eval_steps if config.eval_steps > 0 else None,
        logging_steps=max(1, min(config.eval_steps or 100, 100)),
        save_strategy="steps" if config.checkpoint_steps > 0 else "no",
        save_steps=config.checkpoint_steps or None,
        save_total_limit=1,
        seed=config.seed,
        data_seed=config.seed,
        report_to=config.report_to,
        use_cpu=not cuda,
    )

    # Trainer, train
    trainer = SentenceTransformerTrainer(
        model=model,
        args=args,
        train_dataset=dataset,
        loss=train_loss,
        evaluator=evaluator,
        data_collator=collator,
        callbacks=[*(callbacks or []), CheckpointSeal(train_loss)],
    )
    # Resume: an earlier, interrupted build of this artifact left checkpoints behind
    last = last_whole_checkpoint(Path(args.output_dir))
    if last and (last / LOSS_HEAD).exists():
        loss.load_state_dict(load_file(str(last / LOSS_HEAD)), strict=False)
    started = time.perf_counter()
    result = trainer.train(resume_from_checkpoint=str(last) if last else None)
    seconds = time.perf_counter() - started

    # Save in sentence-transformers format (one process saves under DDP); the SoftmaxLoss head is not part
    # of the model
    if not trainer.is_world_process_zero():
        return {}
    model.save(str(out_dir / "model"))
    world = max(1, trainer.args.world_size)
    padding = batches.padding_profile(collator, len(data), config.batch_size, config.seed)
    summary = {
        "device": device_name(),
        "mixed_precision": precision,
        "attention": attention,
        "batches": collator.mode,
        "loss_class": type(loss).__name__ + (" in MatryoshkaLoss" if config.matryoshka_dims else ""),
        "processes": world,
        "steps": result.global_step,
        "train_loss": result.training_loss,
        "seconds": round(seconds, 2),
        "rows": len(dataset),
        "resumed_from": last.name if last else None,
        **throughput(
            model,
            data,
            min(result.global_step * config.batch_size * world, int(len(dataset) * config.epochs)),
            seconds,
            padding,
        ),
        "config": asdict(config),
        "log_history": trainer.state.log_history,
    }
    (out_dir / "training.json").write_text(json.dumps(summary, indent=2, default=str))
    shutil.rmtree(out_dir / "_trainer", ignore_errors=True)
    log.info("trained on %s: %s steps in %.1fs", summary["device"], summary["steps"], seconds)
    return summary
