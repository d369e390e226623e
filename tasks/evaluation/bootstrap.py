"""Is a challenger's gain real? A paired bootstrap over STS-B's pairs, or over the held-out split's queries.

Both models' per-pair cosine similarities on the same pairs (``stsb_pairs.parquet``) are resampled
together, pairs with replacement, and each resample's Spearman gain (challenger minus champion, each
against gold) is kept; the 2.5th and 97.5th percentiles are the gain's 95% interval. The resampling and
the percentiles are scipy's (``scipy.stats.bootstrap``, paired); the statistic is ours, vectorised over
resamples. A gain whose interval reaches 0 could be the luck of which pairs STS-B happens to hold. A held-out metric is
a mean over queries (``holdout_queries.parquet``): the queries are resampled together, and the statistic is
the mean of the per-query differences.

The per-pair file's layout is stated here, where it is read, and ``stsb.py`` writes it: this module
stays light (numpy, pandas, scipy), for the champion decision that imports it.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

RESAMPLES = 1000
SEED = 0
_STSB_METRIC = re.compile(r"stsb_(?P<split>[a-z]+)_spearman(?:_dim(?P<dim>\d+))?")


def cosine_column(dim: int | None) -> str:
    """The per-pair column of the full dimension (``cosine``) or of a truncated one (``cosine_dim64``)."""
    return "cosine" if dim is None else f"cosine_dim{dim}"


class NoBootstrap(Exception):
    """The gain cannot be bootstrapped (no per-pair file, other pairs, other metric); the message says why."""


@dataclass(frozen=True)
class Interval:
    low: float
    high: float
    resamples: int
    seed: int

    def record(self) -> dict:
        return asdict(self)


def split_and_column(metric: str) -> tuple[str, str]:
    """The STS-B split and per-pair column a metric is computed from (``stsb_test_spearman_dim64``: test,
    ``cosine_dim64``)."""
    match = _STSB_METRIC.fullmatch(metric)
    if match is None:
        raise NoBootstrap(f"{metric!r} is not an STS-B Spearman metric")
    dim = match["dim"]
    return match["split"], cosine_column(None if dim is None else int(dim))


def _per_item(path: Path, name: str, kind: str, columns: tuple[str, ...]):
    """One model's per-pair or per-query file, with ``columns``; NoBootstrap says why not."""
    import pandas as pd

    try:
        frame = pd.read_parquet(path)
    except (OSError, ValueError) as exc:
        raise NoBootstrap(f"the {name}'s {kind} file cannot be read ({path}): {exc}") from exc
    missing = [c for c in columns if c not in frame]
    if missing:
        raise NoBootstrap(f"the {name}'s {kind} file has no {missing[0]!r}")
    return frame


def paired_similarities(challenger: Path, champion: Path, metric: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(gold, challenger's cosine, champion's cosine) on the metric's split, pair by pair; the two files
    must hold the same pairs with the same gold scores."""

    split, column = split_and_column(metric)
    sides = []
    for name, path in (("challenger", challenger), ("champion", champion)):
        frame = _per_item(path, name, "per-pair", (column,))
        sides.append(frame[frame["split"] == split].sort_values("pair").reset_index(drop=True))
    mine, theirs = sides
    if len(mine) < 3:
        raise NoBootstrap(f"the per-pair files hold {len(mine)} STS-B {split} pairs, too few to resample")
    if not (mine["pair"].equals(theirs["pair"]) and np.allclose(mine["gold"], theirs["gold"])):
        raise NoBootstrap(f"the two per-pair files do not hold the same STS-B {split} pairs")
    return mine["gold"].to_numpy(float), mine[column].to_numpy(float), theirs[column].to_numpy(float)


def _row_spearman(gold_ranks: np.ndarray, values: np.ndarray) -> np.ndarray:
    """Spearman of each row of ``values`` against the same row of gold's ranks (ties: average ranks)."""
    from scipy.stats import rankdata

    ranks = rankdata(values, axis=1)
    g = gold_ranks - gold_ranks.mean(axis=1, keepdims=True)
    r = ranks - ranks.mean(axis=1, keepdims=True)
    return (g * r).sum(axis=1) / np.sqrt((g * g).sum(axis=1) * (r * r).sum(axis=1))


def _gain(gold: np.ndarray, challenger: np.ndarray, champion: np.ndarray, axis: int = -1) -> np.ndarray:
    """Spearman(challenger) - Spearman(champion) of each resample (a row, pairs along ``axis``, which scipy
    always passes as the last): the statistic ``scipy.stats.bootstrap`` resamples."""
    from scipy.stats import rankdata

    gold, challenger, champion = (np.moveaxis(np.atleast_2d(a), axis, -1) for a in (gold, challenger, champion))
    gold_ranks = rankdata(gold, axis=-1)
    return _row_spearman(gold_ranks, challenger) - _row_spearman(gold_ranks, champion)


def gain_interval(
    gold: np.ndarray, challenger: np.ndarray, champion: np.ndarray, resamples: int = RESAMPLES, seed: int = SEED
) -> Interval:
    """The 95% percentile interval of Spearman(challenger) - Spearman(champion) over pairs resampled
    together; a fixed seed makes the same files give the same interval."""
    import warnings

    from scipy.stats import bootstrap

    with warnings.catch_warnings():  # a NaN interval is dealt with below, scipy's warning about it is not news
        warnings.simplefilter("ignore", RuntimeWarning)
        result = bootstrap(
            (gold, challenger, champion),
            _gain,
            n_resamples=resamples,
            batch=250,  # 250 x pairs arrays, a few MB each (and the very resamples the old hand-written loop drew)
            vectorized=True,
            paired=True,
            method="percentile",
            confidence_level=0.95,
            rng=np.random.default_rng(seed),
        )
    low, high = result.confidence_interval
    if np.isnan(low) or np.isnan(high):
        # a resample whose pairs all have one value has no Spearman (NaN, possible on a few pairs only): scipy's
        # percentiles are then NaN, so they are taken over the resamples that have one, as before
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # every resample NaN: a NaN interval, reaching no 0
            low, high = np.nanpercentile(result.bootstrap_distribution, [2.5, 97.5])
    return Interval(float(low), float(high), resamples, seed)


def paired_queries(challenger: Path, champion: Path, metric: str) -> tuple[np.ndarray, np.ndarray]:
    """(challenger's, champion's) per-query scores of a held-out metric (``holdout_ndcg@10``), query by query;
    the two files must score the same queries."""
    column = metric.removeprefix("holdout_")
    sides = [_per_item(path, name, "per-query", ("query", column)).sort_values("query").reset_index(drop=True)
             for name, path in (("challenger", challenger), ("champion", champion))]  # fmt: skip
    mine, theirs = sides
    if len(mine) < 3:
        raise NoBootstrap(f"the per-query files hold {len(mine)} queries, too few to resample")
    if not mine["query"].equals(theirs["query"]):
        raise NoBootstrap("the two per-query files do not score the same held-out queries")
    return mine[column].to_numpy(float), theirs[column].to_numpy(float)


def mean_gain_interval(challenger: np.ndarray, champion: np.ndarray, resamples: int = RESAMPLES,
                       seed: int = SEED) -> Interval:  # fmt: skip
    """The 95% percentile interval of mean(challenger - champion) over queries resampled together."""
    from scipy.stats import bootstrap

    result = bootstrap((challenger - champion,), np.mean, n_resamples=resamples, batch=250, vectorized=True,
                       method="percentile", confidence_level=0.95, rng=np.random.default_rng(seed))  # fmt: skip
    low, high = result.confidence_interval
    return Interval(float(low), float(high), resamples, seed)


def bootstrap_gain(challenger: Path, champion: Path, metric: str, resamples: int = RESAMPLES) -> Interval:
    """The gain's interval on ``metric`` from the two models' per-pair (STS-B) or per-query (held-out) files;
    NoBootstrap says why not."""
    if metric.startswith("holdout_"):
        return mean_gain_interval(*paired_queries(challenger, champion, metric), resamples=resamples)
    return gain_interval(*paired_similarities(challenger, champion, metric), resamples=resamples)
