"""Train a sentence-embedding model with SentenceTransformerTrainer around the chosen loss.

Reads like the seed notebook: model, data, loss, evaluator, arguments, trainer, train, save.
CUDA with fp16 when present, CPU otherwise; no experiment tracker unless ``report_to`` asks.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import pandas as pd
from safetensors.torch import load_file, save_file
from transformers import TrainerCallback, set_seed

from tasks.labels import COLUMNS

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
    mini_batch_size: int = 0  # > 0 with mnr: CachedMultipleNegativesRankingLoss with this mini batch
    checkpoint_steps: int = 500  # a checkpoint every N steps, to resume an interrupted run (0: none)
    processes: int = 0  # data-parallel training processes; 0: one per GPU when there are several, else 1

    def check(self) -> None:
        if self.precision not in ("fp16", "bf16", "fp32"):
            raise ValueError(f"parameter precision: {self.precision!r} is not 'fp16', 'bf16' or 'fp32'")
        if self.batch_sampler not in ("batch_sampler", "no_duplicates"):
            raise ValueError(
                f"parameter batch_sampler: {self.batch_sampler!r} is not 'batch_sampler' or 'no_duplicates'"
            )
        if self.mini_batch_size and self.loss != "mnr":
            raise ValueError("parameter mini_batch_size: the cached loss applies to loss 'mnr' only")


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


def build_loss(model, loss: str, mini_batch_size: int = 0):
    """SoftmaxLoss(3 labels), CosineSimilarityLoss or (Cached)MultipleNegativesRankingLoss."""
    from sentence_transformers import losses

    if loss == "mnr" and mini_batch_size > 0:
        return losses.CachedMultipleNegativesRankingLoss(model, mini_batch_size=mini_batch_size)

    if loss == "softmax":
        return losses.SoftmaxLoss(model, embedding_dimension=model.get_embedding_dimension(), num_labels=3)
    if loss == "cosine":
        return losses.CosineSimilarityLoss(model)
    if loss == "mnr":
        return losses.MultipleNegativesRankingLoss(model)
    raise ValueError(f"unknown loss {loss!r}")


def training_columns(train: pd.DataFrame, loss: str) -> list[str]:
    """The columns the loss reads, in the order it reads them (negative last, when mined)."""
    columns = list(COLUMNS[loss])
    if loss == "mnr":
        columns += [c for c in train.columns if re.fullmatch(r"negative(_\d+)?", c)]
    return columns


# Dense fp16/bf16 tensor-core peak, TFLOP/s, by GPU name: the denominator of model FLOPs utilisation.
PEAK_TFLOPS = {"H200": 989.0, "H100": 989.0, "A100": 312.0, "L40S": 362.0, "L4": 121.0, "A10": 125.0, "V100": 125.0}


def throughput(model, train: pd.DataFrame, columns: list[str], samples: int, seconds: float) -> dict:
    """Samples and tokens per second, and on a known GPU an estimate of model FLOPs utilisation.

    Tokens are counted with the model's tokenizer, truncated as in training; training FLOPs are
    estimated as 6 × parameters × tokens (forward and backward).
    """
    import torch

    lengths = 0
    for column in columns:
        if train[column].dtype == object or pd.api.types.is_string_dtype(train[column]):
            encoded = model.tokenizer(
                train[column].astype(str).tolist(), truncation=True, max_length=model.max_seq_length
            )
            lengths += sum(len(ids) for ids in encoded["input_ids"])
    tokens_per_sample = lengths / max(1, len(train))
    out = {
        "samples_per_second": round(samples / seconds, 2),
        "tokens_per_second": round(samples * tokens_per_sample / seconds, 1),
        "tokens_per_sample": round(tokens_per_sample, 1),
        "mfu": None,
    }
    if torch.cuda.is_available():
        name = torch.cuda.get_device_name(0)
        peak = next((v for k, v in PEAK_TFLOPS.items() if k in name), None)
        if peak:
            params = sum(p.numel() for p in model.parameters())
            out["mfu"] = round(6 * params * out["tokens_per_second"] / (peak * 1e12), 4)
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
    return {k: v.detach().contiguous() for k, v in loss.state_dict().items() if not k.startswith("model.")}


def train_model(
    model_location: str,
    train: pd.DataFrame,
    sts_validation: pd.DataFrame,
    config: TrainConfig,
    out_dir: Path,
    callbacks: list | None = None,
) -> dict:
    """Train and save to ``out_dir/model``; returns the log history and throughput."""
    import torch
    from datasets import Dataset
    from sentence_transformers import SentenceTransformer, SentenceTransformerTrainer
    from sentence_transformers.evaluation import EmbeddingSimilarityEvaluator
    from sentence_transformers.training_args import SentenceTransformerTrainingArguments

    os.environ.setdefault("WANDB_DISABLED", "true")
    cuda = torch.cuda.is_available()
    precision = mixed_precision(config.precision)

    # Model: the base model, on the GPU when there is one
    model = SentenceTransformer(model_location, trust_remote_code=False)

    # Data: exactly the loss's columns, in its order
    dataset = Dataset.from_pandas(train[training_columns(train, config.loss)], preserve_index=False)

    # Loss (seeded first: SoftmaxLoss draws its classifier's initial weights)
    set_seed(config.seed)
    loss = build_loss(model, config.loss, config.mini_batch_size)

    # Evaluator: STS-B validation, Spearman of cosine similarity against gold / 5
    evaluator = EmbeddingSimilarityEvaluator(
        sentences1=sts_validation["sentence1"].tolist(),
        sentences2=sts_validation["sentence2"].tolist(),
        scores=(sts_validation["score"] / 5.0).tolist(),
        main_similarity="cosine",
        name="sts-dev",
        write_csv=False,
    )

    # Arguments: the seed's recipe by default; mixed precision on CUDA only; checkpoints for resuming
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
        batch_sampler=config.batch_sampler,
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
        loss=loss,
        evaluator=evaluator,
        callbacks=[*(callbacks or []), CheckpointSeal(loss)],
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
    summary = {
        "device": device_name(),
        "mixed_precision": precision,
        "processes": world,
        "steps": result.global_step,
        "train_loss": result.training_loss,
        "seconds": round(seconds, 2),
        "rows": len(dataset),
        "resumed_from": last.name if last else None,
        **throughput(
            model,
            train,
            training_columns(train, config.loss),
            min(result.global_step * config.batch_size * world, int(len(dataset) * config.epochs)),
            seconds,
        ),
        "config": asdict(config),
        "log_history": trainer.state.log_history,
    }
    (out_dir / "training.json").write_text(json.dumps(summary, indent=2, default=str))
    shutil.rmtree(out_dir / "_trainer", ignore_errors=True)
    log.info("trained on %s: %s steps in %.1fs", summary["device"], summary["steps"], seconds)
    return summary
