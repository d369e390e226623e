"""Evaluate one model: STS-B, then every MTEB task of the settings, with progress as texts are encoded.

MTEB tasks (Banking77Classification by default) are scored by mteb itself (``mteb_tasks``). Every
text is encoded once, in batches of similar token length.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from tasks.cluster.encoding import encoding_pool
from tasks.evaluation import mteb_tasks
from tasks.evaluation.data import bundled_task_data, stsb_pairs
from tasks.evaluation.retrieval import retrieval_scores
from tasks.evaluation.settings import STSB_SPLITS, EvalSettings, dimension_metric
from tasks.evaluation.stsb import spearman_scores, stsb_similarities
from tasks.models.encoding import encode_in_token_order, encoding_batch_size
from tasks.models.resolve import ResolvedModel, check_dims
from tasks.pairs.holdout import RetrievalSet
from tasks.store.artifacts import write_parquet
from tasks.store.catalog import HOLDOUT_QUERIES_FILE, METRICS_FILE, METRICS_JSON, STSB_PAIRS_FILE

Encode = Callable[[list[str]], np.ndarray]  # texts -> their vectors (the embedding cache's, for the held-out set)


class _Fraction:
    """Texts encoded so far against those expected, reported as a fraction (a progress artifact)."""

    def __init__(self, expected: int, report: Callable[[float], None] | None) -> None:
        self.expected, self.done, self.report = max(1, expected), 0, report

    def update(self, n: int) -> None:
        self.done += n
        if self.report:
            self.report(min(0.99, self.done / self.expected))  # 1.0 only when the evaluation ends


def texts_expected(stsb: dict[str, pd.DataFrame], tasks: dict[str, dict[str, pd.DataFrame] | None],
                   retrieval: RetrievalSet | None = None) -> int:  # fmt: skip
    """About how many texts the evaluation encodes: STS-B and the held-out set exactly; for Banking77, its test
    split and the undersampled train split mteb keeps (about 1.5x the test); a guess of 10,000 per hub task."""
    count = sum(2 * len(pairs) for pairs in stsb.values())
    count += 0 if retrieval is None else len(retrieval.queries) + len(retrieval.corpus)
    for name, data in tasks.items():
        if data is None:
            count += 10_000
        elif name == "Banking77Classification":
            count += int(min(2.5 * len(data["test"]), len(data["test"]) + len(data["train"])))
        else:
            count += 2 * len(data["test"])
    return count


def evaluate_model(
    model,
    settings: EvalSettings,
    out_dir: Path,
    progress: Callable[[float], None] | None = None,
    resolved: ResolvedModel | None = None,
    retrieval: RetrievalSet | None = None,
    cached: Encode | None = None,
) -> dict[str, float]:
    """All metrics for one model; mteb's raw results are kept beside them under ``out_dir/mteb``, and
    STS-B's per-pair cosine similarities in ``out_dir/stsb_pairs.parquet`` (for the champion's bootstrap).
    With the held-out split's ``retrieval`` set, its metrics too, and each query's scores in
    ``out_dir/holdout_queries.parquet``; its texts are encoded by ``cached`` (the embedding cache) if given.

    ``progress(fraction)`` is told after each batch of texts, for a Prefect progress artifact. With the run's
    cluster and ``resolved`` (where ``model`` was loaded from), STS-B and mteb's tasks encode on its workers.
    """
    check_dims(settings.dims, model.get_embedding_dimension(), parameter="eval_dims")
    stsb = {split: stsb_pairs(split, settings.limit) for split in STSB_SPLITS}  # each file read once
    tasks = {name: bundled_task_data(name, settings.limit) for name in settings.tasks}
    fraction = _Fraction(texts_expected(stsb, tasks, retrieval), progress)
    with encoding_pool(model, resolved, settings.effective_precision) as pool:  # the precision the metrics key holds
        with tqdm(desc="evaluating: STS-B", unit="text", total=sum(2 * len(p) for p in stsb.values())) as bar:
            similarities = stsb_similarities(model, stsb, settings.dims, mteb_tasks.Tally(bar, fraction.update), pool)
        out_dir.mkdir(parents=True, exist_ok=True)
        similarities.to_parquet(out_dir / STSB_PAIRS_FILE, index=False)
        metrics = spearman_scores(similarities, settings.dims)
        if retrieval is not None:
            metrics |= held_out_scores(model, retrieval, settings.dims, out_dir, fraction.update, pool, cached)
        remote = pool if hasattr(pool, "map_shards") else None  # mteb's tasks: the cluster, not a local GPU pool
        for name, data in tasks.items():
            metrics[mteb_tasks.metric_name(name)] = mteb_tasks.evaluate_task(
                model, name, data, out_dir / "mteb", encoding_batch_size(str(model.device)), fraction.update, remote
            )
    if progress:
        progress(1.0)
    return metrics


def held_out_scores(
    model,
    retrieval: RetrievalSet,
    dims: tuple[int, ...],
    out_dir: Path,
    tally: Callable[[int], None],
    pool=None,
    cached: Encode | None = None,
) -> dict[str, float]:
    """Retrieval metrics on the held-out split; every query's scores are written for the bootstrap."""
    texts = [*retrieval.queries, *retrieval.corpus]
    if cached is not None:
        vectors = cached(texts)
        tally(len(texts))
    else:
        with tqdm(desc="evaluating: held-out", unit="text", total=len(texts)) as bar:
            vectors = encode_in_token_order(model, texts, encoding_batch_size(str(model.device)),
                                            mteb_tasks.Tally(bar, tally), pool=pool, convert_to_numpy=True)  # fmt: skip
    queries = len(retrieval.queries)
    scores, table = retrieval_scores(vectors[:queries], vectors[queries:], retrieval, dims)
    table.to_parquet(out_dir / HOLDOUT_QUERIES_FILE, index=False)
    return scores


def write_metrics(folder: Path, metrics: dict[str, float], dims: tuple[int, ...]) -> int:
    """The scores flat (``metrics.json``) and as a table (``metrics.parquet``); returns the table's rows."""
    (folder / METRICS_JSON).write_text(json.dumps(metrics, indent=2))
    return write_parquet(metrics_table(metrics, dims), folder / METRICS_FILE)


def read_metrics(folder: Path) -> dict[str, float]:
    """A metrics artifact's scores, by metric name."""
    return json.loads((folder / METRICS_JSON).read_text())


def metrics_table(metrics: dict[str, float], dims: tuple[int, ...]) -> pd.DataFrame:
    """One row per metric with its full-dimension ``value`` and, for Matryoshka runs, a column per dimension."""
    truncated = {dimension_metric(m, d) for m in metrics for d in dims}
    base = [m for m in metrics if m not in truncated]
    table = pd.DataFrame({"metric": base, "value": [metrics[m] for m in base]})
    for dim in dims:
        table[f"dim_{dim}"] = [metrics.get(dimension_metric(m, dim), float("nan")) for m in base]
    return table
