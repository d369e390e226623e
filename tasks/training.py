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

from tasks.labels import COLUMNS

log = logging.getLogger(__name__)


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


def device_name() -> str:
    import torch

    return f"cuda ({torch.cuda.get_device_name(0)})" if torch.cuda.is_available() else "cpu"


def build_loss(model, loss: str):
    """SoftmaxLoss(3 labels), CosineSimilarityLoss or MultipleNegativesRankingLoss."""
    from sentence_transformers import losses

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


def train_model(
    model_location: str,
    train: pd.DataFrame,
    sts_validation: pd.DataFrame,
    config: TrainConfig,
    out_dir: Path,
) -> dict:
    """Train and save to ``out_dir/model``; returns the log history and throughput."""
    import torch
    from datasets import Dataset
    from sentence_transformers import SentenceTransformer, SentenceTransformerTrainer
    from sentence_transformers.evaluation import EmbeddingSimilarityEvaluator
    from sentence_transformers.training_args import SentenceTransformerTrainingArguments

    os.environ.setdefault("WANDB_DISABLED", "true")
    cuda = torch.cuda.is_available()

    # Model: the base model, on the GPU when there is one
    model = SentenceTransformer(model_location, trust_remote_code=False)

    # Data: exactly the loss's columns, in its order
    dataset = Dataset.from_pandas(train[training_columns(train, config.loss)], preserve_index=False)

    # Loss
    loss = build_loss(model, config.loss)

    # Evaluator: STS-B validation, Spearman of cosine similarity against gold / 5
    evaluator = EmbeddingSimilarityEvaluator(
        sentences1=sts_validation["sentence1"].tolist(),
        sentences2=sts_validation["sentence2"].tolist(),
        scores=(sts_validation["score"] / 5.0).tolist(),
        main_similarity="cosine",
        name="sts-dev",
        write_csv=False,
    )

    # Arguments: the seed's recipe; mixed precision on CUDA only; checkpoints stay out of the artifact
    args = SentenceTransformerTrainingArguments(
        output_dir=str(out_dir / "_trainer"),
        num_train_epochs=config.epochs,
        max_steps=config.max_steps,
        per_device_train_batch_size=config.batch_size,
        per_device_eval_batch_size=config.batch_size,
        learning_rate=config.learning_rate,
        warmup_steps=config.warmup_steps,
        fp16=cuda,
        eval_strategy="steps" if config.eval_steps > 0 else "no",
        eval_steps=config.eval_steps if config.eval_steps > 0 else None,
        logging_steps=max(1, min(config.eval_steps or 100, 100)),
        save_strategy="no",
        seed=config.seed,
        data_seed=config.seed,
        report_to=config.report_to,
        use_cpu=not cuda,
    )

    # Trainer, train
    trainer = SentenceTransformerTrainer(model=model, args=args, train_dataset=dataset, loss=loss, evaluator=evaluator)
    started = time.perf_counter()
    result = trainer.train()
    seconds = time.perf_counter() - started

    # Save in sentence-transformers format; the SoftmaxLoss head is not part of the model
    model.save(str(out_dir / "model"))
    summary = {
        "device": device_name(),
        "mixed_precision": "fp16" if cuda else "no",
        "steps": result.global_step,
        "train_loss": result.training_loss,
        "seconds": round(seconds, 2),
        "samples_per_second": result.metrics.get("train_samples_per_second"),
        "rows": len(dataset),
        "config": asdict(config),
        "log_history": trainer.state.log_history,
    }
    (out_dir / "training.json").write_text(json.dumps(summary, indent=2, default=str))
    shutil.rmtree(out_dir / "_trainer", ignore_errors=True)
    log.info("trained on %s: %s steps in %.1fs", summary["device"], summary["steps"], seconds)
    return summary
