"""Evaluate a model: STS-B (validation, test) and MTEB Banking77Classification through mteb itself.

STS-B: Spearman of cosine similarity against gold scores / 5, as the seed computes it.
Banking77: mteb's own task and scoring, with the task's dataset set to the bundled copy
when the hub is out of reach, and mteb's result cache bypassed so that a retrained model
never gets a stale score back.
"""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd

from tasks.sources import SAMPLES, load_banking77, load_sts

METRICS = ("stsb_validation_spearman", "stsb_test_spearman", "banking77_accuracy")
STSB_DIR = SAMPLES / "stsb"
BANKING77_DIR = SAMPLES / "banking77"


def sts_validation(limit: int | None = None) -> pd.DataFrame:
    df = load_sts(STSB_DIR / "validation.parquet")
    return df.head(limit) if limit else df


def stsb_spearman(model, pairs: pd.DataFrame, name: str) -> float:
    """Spearman correlation of cosine similarity with the gold scores (scaled to [0, 1])."""
    from sentence_transformers.evaluation import EmbeddingSimilarityEvaluator

    evaluator = EmbeddingSimilarityEvaluator(
        sentences1=pairs["sentence1"].tolist(),
        sentences2=pairs["sentence2"].tolist(),
        scores=(pairs["score"] / 5.0).tolist(),
        main_similarity="cosine",
        name=name,
        write_csv=False,
    )
    return float(evaluator(model)[evaluator.primary_metric])


def banking77_splits(limit: int | None = None) -> dict[str, pd.DataFrame]:
    """The bundled Banking77 train/test; ``limit`` keeps a stratified head of each split."""
    splits = load_banking77(BANKING77_DIR)
    if limit:
        per_label = max(1, math.ceil(limit / 77))
        splits = {
            name: df.groupby("label", sort=False).head(per_label).reset_index(drop=True) for name, df in splits.items()
        }
    return splits


def evaluate_model(model, limit: int | None, out_dir: Path) -> dict[str, float]:
    """All metrics for one model; mteb's raw results are kept beside them."""
    from tasks.mteb_eval import banking77_accuracy

    metrics = {}
    for split in ("validation", "test"):
        pairs = load_sts(STSB_DIR / f"{split}.parquet")
        metrics[f"stsb_{split}_spearman"] = stsb_spearman(model, pairs.head(limit) if limit else pairs, f"sts-{split}")
    metrics["banking77_accuracy"] = banking77_accuracy(model, banking77_splits(limit), out_dir / "mteb")
    return metrics
