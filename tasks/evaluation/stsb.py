"""STS-B as the seed scores it: Spearman of the pairs' cosine similarity against gold / 5, at the full
dimension and at each truncated (Matryoshka) dimension.

The per-pair similarities are kept too (``stsb_pairs.parquet``), so that the champion decision can
resample the pairs and tell a real gain from chance (``tasks/evaluation/bootstrap.py``).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from tasks.evaluation.bootstrap import cosine_column
from tasks.evaluation.settings import dimension_metric
from tasks.models.encoding import encode_in_token_order, encoding_batch_size


def cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Row-wise cosine similarity of two equally long arrays of vectors."""
    a = a / np.linalg.norm(a, axis=1, keepdims=True)
    b = b / np.linalg.norm(b, axis=1, keepdims=True)
    return np.einsum("ij,ij->i", a, b)


def stsb_similarities(
    model, splits: dict[str, pd.DataFrame], dims: tuple[int, ...], bar=None, pool=None
) -> pd.DataFrame:
    """One row per pair of each split: ``split``, ``pair`` (its row in the split), ``gold`` (score / 5) and
    the cosine similarity at the full and at each truncated dimension (``pool``: ``encoding_pool``)."""
    frames = []
    batch_size = encoding_batch_size(str(model.device))
    for split, pairs in splits.items():
        texts = [*pairs["sentence1"], *pairs["sentence2"]]
        vectors = encode_in_token_order(model, texts, batch_size, bar, pool=pool, convert_to_numpy=True)
        first, second = vectors[: len(pairs)], vectors[len(pairs) :]
        frame = pd.DataFrame({"split": split, "pair": np.arange(len(pairs)), "gold": (pairs["score"] / 5.0).to_numpy()})
        frame[cosine_column(None)] = cosine(first, second)
        for dim in dims:
            frame[cosine_column(dim)] = cosine(first[:, :dim], second[:, :dim])
        frames.append(frame)
    return pd.concat(frames, ignore_index=True)


def spearman_scores(similarities: pd.DataFrame, dims: tuple[int, ...]) -> dict[str, float]:
    """``stsb_<split>_spearman`` (and ``_dim<d>``) of per-pair similarities, in the splits' order."""
    from scipy.stats import spearmanr

    scores = {}
    for split, pairs in similarities.groupby("split", sort=False):
        metric = f"stsb_{split}_spearman"
        scores[metric] = float(spearmanr(pairs["gold"], pairs[cosine_column(None)]).statistic)
        for dim in dims:
            scores[dimension_metric(metric, dim)] = float(spearmanr(pairs["gold"], pairs[cosine_column(dim)]).statistic)
    return scores
