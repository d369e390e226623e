"""STS-B as the seed scores it: Spearman of the pairs' cosine similarity against gold / 5, at the full
dimension and at each truncated (Matryoshka) dimension."""

from __future__ import annotations

import numpy as np
import pandas as pd

from tasks.evaluation.settings import dimension_metric
from tasks.models.encoding import encode_in_token_order, encoding_batch_size


def spearman_of_cosine(a: np.ndarray, b: np.ndarray, gold: np.ndarray) -> float:
    """Spearman of the pairs' cosine similarity against the gold scores (the seed's STS-B metric)."""
    from scipy.stats import spearmanr

    a = a / np.linalg.norm(a, axis=1, keepdims=True)
    b = b / np.linalg.norm(b, axis=1, keepdims=True)
    return float(spearmanr(gold, np.einsum("ij,ij->i", a, b)).statistic)


def stsb_scores(model, splits: dict[str, pd.DataFrame], dims: tuple[int, ...], bar=None, pool=None) -> dict[str, float]:
    """Spearman of each split's pairs (validation, test), at the full and at each truncated dimension
    (``pool``: several GPUs' processes, ``encoding_pool``)."""
    scores = {}
    batch_size = encoding_batch_size(str(model.device))
    for split, pairs in splits.items():
        texts = [*pairs["sentence1"], *pairs["sentence2"]]
        vectors = encode_in_token_order(model, texts, batch_size, bar, pool=pool, convert_to_numpy=True)
        first, second, gold = vectors[: len(pairs)], vectors[len(pairs) :], (pairs["score"] / 5.0).to_numpy()
        metric = f"stsb_{split}_spearman"
        scores[metric] = spearman_of_cosine(first, second, gold)
        for dim in dims:
            scores[dimension_metric(metric, dim)] = spearman_of_cosine(first[:, :dim], second[:, :dim], gold)
    return scores
