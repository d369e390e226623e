"""Is a challenger's STS-B gain real? A paired bootstrap over the evaluation pairs.

Both models' per-pair cosine similarities on the same pairs (``stsb_pairs.parquet``) are resampled
together, pairs with replacement, and each resample's Spearman gain (challenger minus champion, each
against gold) is kept; the 2.5th and 97.5th percentiles are the gain's 95% interval. A gain whose
interval reaches 0 could be the luck of which pairs STS-B happens to hold.

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


def paired_similarities(challenger: Path, champion: Path, metric: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(gold, challenger's cosine, champion's cosine) on the metric's split, pair by pair; the two files
    must hold the same pairs with the same gold scores."""
    import pandas as pd

    split, column = split_and_column(metric)
    sides = []
    for name, path in (("challenger", challenger), ("champion", champion)):
        try:
            frame = pd.read_parquet(path)
        except (OSError, ValueError) as exc:
            raise NoBootstrap(f"the {name}'s per-pair file cannot be read ({path}): {exc}") from exc
        if column not in frame:
            raise NoBootstrap(f"the {name}'s per-pair file has no {column!r}")
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


def gain_interval(
    gold: np.ndarray, challenger: np.ndarray, champion: np.ndarray, resamples: int = RESAMPLES, seed: int = SEED
) -> Interval:
    """The 95% percentile interval of Spearman(challenger) - Spearman(champion) over pairs resampled
    together; a fixed seed makes the same files give the same interval."""
    from scipy.stats import rankdata

    rng = np.random.default_rng(seed)
    gains = np.empty(resamples)
    for start in range(0, resamples, 250):  # in blocks: 250 x pairs arrays, a few MB each
        rows = rng.integers(0, len(gold), size=(min(250, resamples - start), len(gold)))
        gold_ranks = rankdata(gold[rows], axis=1)
        gains[start : start + len(rows)] = _row_spearman(gold_ranks, challenger[rows]) - _row_spearman(
            gold_ranks, champion[rows]
        )
    low, high = np.nanpercentile(gains, [2.5, 97.5])
    return Interval(float(low), float(high), resamples, seed)


def bootstrap_gain(challenger: Path, champion: Path, metric: str, resamples: int = RESAMPLES) -> Interval:
    """The gain's interval on ``metric`` from the two models' per-pair files; NoBootstrap says why not."""
    return gain_interval(*paired_similarities(challenger, champion, metric), resamples=resamples)
