"""Retrieval on the held-out split, scored as sentence-transformers' ``InformationRetrievalEvaluator`` scores it.

MRR@10, NDCG@10 (binary relevance) and recall@1/10/100 of each query against the corpus by cosine
similarity, ties broken by corpus position, as the evaluator breaks them by corpus id (a test holds the two
equal). Ours rather than the evaluator itself: it keeps every query's scores, which the champion's paired
bootstrap resamples, scores each Matryoshka dimension from one encoding, and takes the corpus's vectors from
the embedding cache (encoded once per model).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from tasks.evaluation.settings import dimension_metric
from tasks.pairs.holdout import RetrievalSet

PREFIX = "holdout_"
MEASURES = ("mrr@10", "ndcg@10", "recall@1", "recall@10", "recall@100")
DEPTH = 100  # the deepest cut-off above
QUERY_CHUNK = 256  # queries scored at once: a chunk × corpus matrix of similarities


def metric_names(dims: tuple[int, ...] = ()) -> list[str]:
    """``holdout_mrr@10``, ... and each at the truncated dimensions (``holdout_ndcg@10_dim64``)."""
    names = [PREFIX + m for m in MEASURES]
    return names + [dimension_metric(n, d) for n in names for d in dims]


def _normalised(vectors: np.ndarray) -> np.ndarray:
    vectors = np.asarray(vectors, dtype=np.float32)
    return vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)


def ranked(queries: np.ndarray, corpus: np.ndarray, depth: int = DEPTH) -> np.ndarray:
    """Each query's top ``depth`` corpus positions by cosine similarity, best first, ties by position."""
    queries, corpus = _normalised(queries), _normalised(corpus)
    depth = min(depth, len(corpus))
    rows = []
    for start in range(0, len(queries), QUERY_CHUNK):
        scores = queries[start : start + QUERY_CHUNK] @ corpus.T
        # lexsort: the last key sorts first, so by score descending, then by position ascending
        positions = np.broadcast_to(np.arange(len(corpus)), scores.shape)
        order = np.lexsort((positions, -scores), axis=1)[:, :depth]
        rows.append(order)
    return np.concatenate(rows) if rows else np.zeros((0, depth), int)


def query_scores(top: np.ndarray, relevant: list[list[int]]) -> dict[str, np.ndarray]:
    """Every measure of every query, from its ranked corpus positions and its relevant ones."""
    hits = np.array([np.isin(row, rel) for row, rel in zip(top, relevant)], bool).reshape(top.shape)
    counts = np.array([len(rel) for rel in relevant], float)
    discounts = 1.0 / np.log2(np.arange(2, hits.shape[1] + 2))
    first = np.where(hits[:, :10].any(axis=1), hits[:, :10].argmax(axis=1), -1)
    ideal = np.array([discounts[: min(int(c), 10)].sum() for c in counts])
    return {
        "mrr@10": np.where(first >= 0, 1.0 / (np.maximum(first, 0) + 1), 0.0),
        "ndcg@10": (hits[:, :10] * discounts[:10]).sum(axis=1) / ideal,
        "recall@1": hits[:, :1].sum(axis=1) / counts,
        "recall@10": hits[:, :10].sum(axis=1) / counts,
        "recall@100": hits[:, :100].sum(axis=1) / counts,
    }


def retrieval_scores(
    queries: np.ndarray, corpus: np.ndarray, retrieval: RetrievalSet, dims: tuple[int, ...]
) -> tuple[dict[str, float], pd.DataFrame]:
    """The metrics (means over queries) at the full and each truncated dimension, and the per-query table:
    ``query`` (its position), then a column per measure and dimension (``ndcg@10``, ``ndcg@10_dim64``)."""
    table = pd.DataFrame({"query": np.arange(len(retrieval.queries))})
    for dim in (None, *dims):
        top = ranked(queries if dim is None else queries[:, :dim], corpus if dim is None else corpus[:, :dim])
        for measure, values in query_scores(top, retrieval.relevant).items():
            table[measure if dim is None else dimension_metric(measure, dim)] = values
    metrics = {PREFIX + column: float(table[column].mean()) for column in table.columns if column != "query"}
    ordered = {name: metrics[name] for name in metric_names(dims)}
    return ordered, table
