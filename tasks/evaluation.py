"""Evaluate a model: STS-B validation and test as the seed scores them, then any MTEB tasks through mteb.

STS-B: Spearman of the cosine similarity against gold scores / 5 (sentence-transformers'
EmbeddingSimilarityEvaluator's computation), at the full dimension and, for Matryoshka models,
at each truncated dimension. MTEB tasks (Banking77Classification by default) are scored by mteb
itself (``tasks/mteb_eval.py``). Every text is encoded once, in batches of similar token length,
and progress is reported as texts are encoded.

``EvalSettings`` is everything that decides a score: tasks, row limit, dimensions and the data's
fingerprints. The champion keeps it, so that models evaluated differently are never compared.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from tasks import mteb_eval
from tasks.sources import SAMPLES, load_banking77, load_sts

STSB_DIR = SAMPLES / "stsb"
BANKING77_DIR = SAMPLES / "banking77"
STSB_SPLITS = ("validation", "test")
DEFAULT_TASKS = ("Banking77Classification",)
BUNDLED_FILES = {
    "stsb": [STSB_DIR / "validation.parquet", STSB_DIR / "test.parquet"],
    "Banking77Classification": [BANKING77_DIR / "train.parquet", BANKING77_DIR / "test.parquet"],
    "STSBenchmark": [STSB_DIR / "test.parquet"],
}


def dimension_metric(metric: str, dim: int) -> str:
    return f"{metric}_dim{dim}"


@dataclass(frozen=True)
class EvalSettings:
    """How models are evaluated. ``limit`` caps rows per split of the bundled data (quick runs)."""

    tasks: tuple[str, ...] = DEFAULT_TASKS
    limit: int | None = None
    dims: tuple[int, ...] = ()  # STS-B also at these truncated dimensions (Matryoshka)

    def metric_names(self) -> list[str]:
        names = [f"stsb_{split}_spearman" for split in STSB_SPLITS]
        names += [dimension_metric(m, d) for m in names[:2] for d in self.dims]
        return names + [mteb_eval.metric_name(t) for t in self.tasks]

    @functools.cached_property
    def fingerprints(self) -> dict[str, str]:
        """The evaluation data's identity: hashes of bundled files, pinned hub revisions of the others
        (hashed once per settings, though a run records them in several places)."""
        return {name: mteb_eval.data_fingerprint(name, BUNDLED_FILES) for name in ("stsb", *self.tasks)}

    def record(self) -> dict:
        """What the champion keeps: the settings and the data's fingerprints."""
        return {"tasks": list(self.tasks), "limit": self.limit, "dims": list(self.dims), "data": self.fingerprints}

    @classmethod
    def from_record(cls, record: dict) -> EvalSettings:
        return cls(tuple(record["tasks"]), record["limit"], tuple(record.get("dims", ())))

    def check(self, hub_reachable: Callable[[], bool]) -> None:
        if self.limit is not None and self.limit < 1:
            raise ValueError(f"parameter eval_limit: must be positive or None, got {self.limit}")
        if len(set(self.tasks)) != len(self.tasks):
            raise ValueError(f"parameter eval_tasks: a task is named twice in {list(self.tasks)}")
        mteb_eval.check_tasks(self.tasks, hub_reachable)


def sts_validation(limit: int | None = None) -> pd.DataFrame:
    df = load_sts(STSB_DIR / "validation.parquet")
    return df.head(limit) if limit else df


def spearman_of_cosine(a: np.ndarray, b: np.ndarray, gold: np.ndarray) -> float:
    """Spearman of the pairs' cosine similarity against the gold scores (the seed's STS-B metric)."""
    from scipy.stats import spearmanr

    a = a / np.linalg.norm(a, axis=1, keepdims=True)
    b = b / np.linalg.norm(b, axis=1, keepdims=True)
    return float(spearmanr(gold, np.einsum("ij,ij->i", a, b)).statistic)


def banking77_splits(limit: int | None = None) -> dict[str, pd.DataFrame]:
    """The bundled Banking77 train/test; ``limit`` keeps a stratified head of each split."""
    splits = load_banking77(BANKING77_DIR)
    if limit:
        per_label = max(1, math.ceil(limit / 77))
        splits = {
            name: df.groupby("label", sort=False).head(per_label).reset_index(drop=True) for name, df in splits.items()
        }
    return splits


def bundled_task_data(name: str, limit: int | None) -> dict[str, pd.DataFrame] | None:
    """The bundled splits of a task, or None for a task mteb loads from the hub."""
    if name == "Banking77Classification":
        return banking77_splits(limit)
    if name == "STSBenchmark":
        test = load_sts(STSB_DIR / "test.parquet")
        return {"test": test.head(limit) if limit else test}
    return None


def stsb_pairs(split: str, limit: int | None) -> pd.DataFrame:
    pairs = load_sts(STSB_DIR / f"{split}.parquet")
    return pairs.head(limit) if limit else pairs


def stsb_scores(
    model, settings: EvalSettings, bar, batch_size: int = 64, splits: dict[str, pd.DataFrame] | None = None
) -> dict[str, float]:
    """STS-B validation and test Spearman, at the full and at each truncated dimension (``splits``: the
    pairs, when already read)."""
    scores = {}
    for split in STSB_SPLITS:
        pairs = splits[split] if splits else stsb_pairs(split, settings.limit)
        texts = [*pairs["sentence1"], *pairs["sentence2"]]
        vectors = mteb_eval.encode_in_token_order(model, texts, batch_size, bar, convert_to_numpy=True)
        first, second, gold = vectors[: len(pairs)], vectors[len(pairs) :], (pairs["score"] / 5.0).to_numpy()
        metric = f"stsb_{split}_spearman"
        scores[metric] = spearman_of_cosine(first, second, gold)
        for dim in settings.dims:
            scores[dimension_metric(metric, dim)] = spearman_of_cosine(first[:, :dim], second[:, :dim], gold)
    return scores


class _Fraction:
    """Texts encoded so far against those expected, reported as a fraction (a progress artifact)."""

    def __init__(self, expected: int, report: Callable[[float], None] | None) -> None:
        self.expected, self.done, self.report = max(1, expected), 0, report

    def update(self, n: int) -> None:
        self.done += n
        if self.report:
            self.report(min(0.99, self.done / self.expected))  # 1.0 only when the evaluation ends


def texts_expected(stsb: dict[str, pd.DataFrame], tasks: dict[str, dict[str, pd.DataFrame] | None]) -> int:
    """About how many texts the evaluation encodes: STS-B exactly; for Banking77, its test split and the
    undersampled train split mteb keeps (about 1.5x the test); a guess of 10,000 per hub task."""
    count = sum(2 * len(pairs) for pairs in stsb.values())
    for name, data in tasks.items():
        if data is None:
            count += 10_000
        elif name == "Banking77Classification":
            count += int(min(2.5 * len(data["test"]), len(data["test"]) + len(data["train"])))
        else:
            count += 2 * len(data["test"])
    return count


def evaluate_model(
    model, settings: EvalSettings, out_dir: Path, progress: Callable[[float], None] | None = None
) -> dict[str, float]:
    """All metrics for one model; mteb's raw results are kept beside them under ``out_dir/mteb``.

    ``progress(fraction)`` is told after each batch of texts, for a Prefect progress artifact.
    """
    from tasks.training import check_matryoshka_dims

    check_matryoshka_dims(settings.dims, "", model.get_embedding_dimension(), parameter="eval_dims")
    stsb = {split: stsb_pairs(split, settings.limit) for split in STSB_SPLITS}  # each file read once
    tasks = {name: bundled_task_data(name, settings.limit) for name in settings.tasks}
    fraction = _Fraction(texts_expected(stsb, tasks), progress)
    with tqdm(desc="evaluating: STS-B", unit="text", total=sum(2 * len(p) for p in stsb.values())) as bar:
        metrics = stsb_scores(model, settings, mteb_eval.Tally(bar, fraction.update), splits=stsb)
    for name, data in tasks.items():
        metrics[mteb_eval.metric_name(name)] = mteb_eval.evaluate_task(
            model, name, data, out_dir / "mteb", on_texts=fraction.update
        )
    if progress:
        progress(1.0)
    return metrics


def metrics_table(metrics: dict[str, float], dims: tuple[int, ...]) -> pd.DataFrame:
    """One row per metric with its full-dimension ``value`` and, for Matryoshka runs, a column per dimension."""
    truncated = {dimension_metric(m, d) for m in metrics for d in dims}
    base = [m for m in metrics if m not in truncated]
    table = pd.DataFrame({"metric": base, "value": [metrics[m] for m in base]})
    for dim in dims:
        table[f"dim_{dim}"] = [metrics.get(dimension_metric(m, dim), float("nan")) for m in base]
    return table
