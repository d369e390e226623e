"""Negatives for MultipleNegativesRankingLoss: soft (random), semi-hard (miner + FAISS), contradiction.

Candidates are all hypotheses of the source. A text equal to the anchor or to any
hypothesis the source pairs with the same premise (after normalising case and whitespace)
is never a negative, whatever the strategy. Semi-hard negatives must also score below the
anchor's positive minus ``margin`` (a guard against unlabelled positives) and below
``max_score`` when set, and, when ``relative_margin`` is above 0, at or below
``p - |p| * relative_margin`` for a positive scoring ``p`` (``relative_ceiling``: NV-Retriever's
TopK-PercPos, ``(1 - relative_margin) * p``, where ``p`` >= 0, and still below ``p`` where it is
negative; a cap that scales with the positive, so near-duplicates of strong positives are skipped).
Several negatives per anchor come out as extra rows or columns; every strategy writes the same columns
(``triplet_columns``: null where it has no score or rank), so SQL and dataframe tools read them together.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from tasks.negatives.embeddings import encode_cached
from tasks.negatives.index import EXACT_LIMIT, SearchIndex, StoredIndex, build_index, recall_at_k
from tasks.pairs.labels import CONTRADICTION, normalise

STRATEGIES = ("none", "soft", "semi-hard", "contradiction")


@dataclass(frozen=True)
class MiningConfig:
    """How to choose negatives; ``check`` refuses impossible settings before anything is encoded."""

    strategy: str = "soft"
    num_negatives: int = 1
    range_min: int = 0
    range_max: int = 50
    max_score: float | None = None
    margin: float = 0.05
    relative_margin: float = 0.0  # > 0: negatives also score <= p - |p| * relative_margin (p: the positive's)
    sampling: str = "top"  # "top": the highest-ranked admissible; "random": a seeded draw among them
    layout: str = "rows"  # "rows": one (anchor, positive, negative) row each; "columns": negative_1..n
    seed: int = 42
    exact_limit: int = EXACT_LIMIT

    def check(self) -> None:
        if self.strategy not in STRATEGIES:
            raise ValueError(f"parameter negatives: {self.strategy!r} is not one of {STRATEGIES}")
        if self.num_negatives < 1:
            raise ValueError(f"parameter num_negatives: must be at least 1, got {self.num_negatives}")
        if self.sampling not in ("top", "random"):
            raise ValueError(f"parameter sampling: {self.sampling!r} is not 'top' or 'random'")
        if self.layout not in ("rows", "columns"):
            raise ValueError(f"parameter negatives_layout: {self.layout!r} is not 'rows' or 'columns'")
        if not 0 <= self.relative_margin < 1:
            raise ValueError(f"parameter relative_margin: must be in [0, 1), got {self.relative_margin}")
        if self.strategy == "semi-hard":
            if not 0 <= self.range_min < self.range_max:
                raise ValueError(
                    f"parameters range_min, range_max: need 0 <= range_min < range_max, "
                    f"got range_min={self.range_min}, range_max={self.range_max}"
                )
            if self.num_negatives > self.range_max - self.range_min:
                raise ValueError(
                    f"parameter num_negatives: {self.num_negatives} is larger than the window "
                    f"range_max - range_min = {self.range_max - self.range_min}"
                )


def relative_ceiling(positive_scores: np.ndarray, relative_margin: float) -> np.ndarray:
    """The most a negative may score under the relative margin: ``p - |p| * relative_margin``, always below
    ``p``. For ``p`` >= 0 that is NV-Retriever's ``(1 - relative_margin) * p``, computed as such so those
    results do not move; below 0, ``(1 - m) * p`` would lie above ``p`` (sentence-transformers fixed its
    miner the same way)."""
    p = positive_scores
    return np.where(p >= 0, (1 - relative_margin) * p, (1 + relative_margin) * p)


def forbidden_texts(raw_pairs: pd.DataFrame) -> dict[str, set[str]]:
    """Per normalised premise: itself and every hypothesis paired with it (its positives among them)."""
    forbidden: dict[str, set[str]] = defaultdict(set)
    for premise, hypothesis in zip(raw_pairs["premise"], raw_pairs["hypothesis"]):
        key = normalise(premise)
        forbidden[key].update((key, normalise(hypothesis)))
    return forbidden


def candidate_pool(raw_pairs: pd.DataFrame) -> list[str]:
    """Distinct hypotheses of the source, in first-seen order."""
    pool = list(dict.fromkeys(raw_pairs["hypothesis"]))
    if not pool:
        raise ValueError("the candidate corpus is empty: the source has no hypotheses")
    return pool


def triplet_columns(config: MiningConfig) -> dict[str, str]:
    """triplets.parquet's columns and pandas types (text, float64 scores, Int64 ranks: null where a strategy
    has none), whatever the strategy. Only the declared layout shapes them, as the trainer reads each text
    column as an input: ``rows`` holds one ``negative``, ``columns`` ``negative_1`` .. ``negative_<num_negatives>``."""
    slots = [""] if config.layout == "rows" else [f"_{i + 1}" for i in range(config.num_negatives)]
    columns = {"anchor": "str", "positive": "str", "positive_score": "float64"}
    for suffix, dtype in (("", "str"), ("_score", "float64"), ("_rank", "Int64")):
        columns |= {f"negative{slot}{suffix}": dtype for slot in slots}
    return columns


def _arrange(mnr: pd.DataFrame, picks: list[list[tuple]], config: MiningConfig,
             positive_scores: dict[tuple[str, str], float] | None = None) -> pd.DataFrame:  # fmt: skip
    """Turn per-anchor picks [(text, score, rank), ...] into rows or columns of ``triplet_columns``; the
    positives' scores by (anchor, positive) from a strategy that scores (None: a score or rank is null)."""
    if config.layout == "rows":
        rows = [(a, p, *pick) for a, p, chosen in zip(mnr["anchor"], mnr["positive"], picks) for pick in chosen]
        out = pd.DataFrame(rows, columns=["anchor", "positive", "negative", "negative_score", "negative_rank"])
    else:
        n = config.num_negatives
        full = [(a, p, chosen) for a, p, chosen in zip(mnr["anchor"], mnr["positive"], picks) if len(chosen) == n]
        out = pd.DataFrame({"anchor": [a for a, _, _ in full], "positive": [p for _, p, _ in full]})
        for j, suffix in enumerate(("", "_score", "_rank")):
            for i in range(n):
                out[f"negative_{i + 1}{suffix}"] = [chosen[i][j] for _, _, chosen in full]
    scores = positive_scores or {}
    out["positive_score"] = [scores.get(pair) for pair in zip(out["anchor"], out["positive"])]
    columns = triplet_columns(config)
    return out[list(columns)].astype(columns)


def soft_negatives(mnr: pd.DataFrame, raw_pairs: pd.DataFrame, config: MiningConfig) -> pd.DataFrame:
    """Random hypotheses of other premises for each (anchor, positive), reproducible by seed."""
    candidates = candidate_pool(raw_pairs)
    normalised = [normalise(c) for c in candidates]
    forbidden = forbidden_texts(raw_pairs)
    rng = np.random.default_rng(config.seed)
    picks = []
    for anchor in mnr["anchor"]:
        banned = forbidden[normalise(anchor)]
        chosen: list[tuple] = []
        seen: set[str] = set()
        for index in rng.integers(0, len(candidates), size=100 * config.num_negatives):
            if normalised[index] not in banned and normalised[index] not in seen:
                chosen.append((candidates[index], None, None))
                seen.add(normalised[index])
                if len(chosen) == config.num_negatives:
                    break
        picks.append(chosen)
    return _arrange(mnr, picks, config)


def contradiction_negatives(mnr: pd.DataFrame, raw_pairs: pd.DataFrame, config: MiningConfig) -> pd.DataFrame:
    """MNLI's own hard negative: a hypothesis labelled contradiction for the same premise."""
    by_premise: dict[str, list[str]] = defaultdict(list)
    contradicted = raw_pairs[raw_pairs["label"] == CONTRADICTION]
    for premise, hypothesis in zip(contradicted["premise"], contradicted["hypothesis"]):
        if hypothesis not in by_premise[normalise(premise)]:
            by_premise[normalise(premise)].append(hypothesis)
    positives: dict[str, set[str]] = defaultdict(set)
    for anchor, positive in zip(mnr["anchor"], mnr["positive"]):
        positives[normalise(anchor)].add(normalise(positive))
    rng = np.random.default_rng(config.seed)
    picks = []
    for anchor in mnr["anchor"]:
        options = [h for h in by_premise.get(normalise(anchor), []) if normalise(h) not in positives[normalise(anchor)]]
        if config.sampling == "random" and len(options) > config.num_negatives:
            options = [options[i] for i in sorted(rng.choice(len(options), config.num_negatives, replace=False))]
        picks.append([(h, None, None) for h in options[: config.num_negatives]])
    return _arrange(mnr, picks, config)


def semi_hard_negatives(
    mnr: pd.DataFrame,
    raw_pairs: pd.DataFrame,
    anchor_vectors: np.ndarray,
    positive_vectors: np.ndarray,
    candidate_vectors: np.ndarray,
    config: MiningConfig,
    batch_size: int = 1024,
    index: SearchIndex | None = None,
) -> tuple[pd.DataFrame, dict]:
    """Candidates ranked by similarity to the anchor: skip the top ``range_min``, look up to ``range_max``,
    keep those below ``max_score``, below the positive's score minus ``margin`` and (when
    ``relative_margin`` > 0) at most ``relative_ceiling`` of it, ``p - |p| * relative_margin``; pick
    ``num_negatives``.

    Returns the negatives and mining facts: index kind, recall of an approximate index, and how many
    candidates of the rank window each rule removed. Not sentence-transformers' ``mine_hard_negatives`` (it
    has these rules): it encodes and indexes in one call, so it cannot search a kept index on a cluster, read
    the embedding cache, guard every hypothesis of the same premise, or count what each rule removed.
    ``index``: the candidates' index, built here when None.
    """
    config.check()
    candidates = candidate_pool(raw_pairs)
    normalised = [normalise(c) for c in candidates]
    forbidden = forbidden_texts(raw_pairs)
    index = index or build_index(candidate_vectors, config.exact_limit, config.seed)
    positive_scores = np.einsum("ij,ij->i", anchor_vectors, positive_vectors)
    k = min(config.range_max, len(candidates))
    anchors = mnr["anchor"].tolist()
    rng = np.random.default_rng(config.seed)
    picks: list[list[tuple]] = []
    # Counted among the window's candidates, each rule on its own: one failing two rules counts under both.
    counts = dict.fromkeys(
        ["window_candidates", "removed_same_premise", "removed_margin", "removed_max_score"]
        + ["removed_relative_margin", "admissible_candidates"],
        0,
    )
    in_window = np.arange(k) >= config.range_min
    for start, scores, ids in index.search(anchor_vectors, k, batch_size):
        positives = positive_scores[start : start + len(ids)]
        window = (ids >= 0) & in_window
        score_ok = scores <= (positives - config.margin)[:, None]
        counts["removed_margin"] += int((window & ~score_ok).sum())
        if config.max_score is not None:
            below_max = scores <= config.max_score
            counts["removed_max_score"] += int((window & ~below_max).sum())
            score_ok &= below_max
        if config.relative_margin > 0:
            below_relative = scores <= relative_ceiling(positives, config.relative_margin)[:, None]
            counts["removed_relative_margin"] += int((window & ~below_relative).sum())
            score_ok &= below_relative
        counts["window_candidates"] += int(window.sum())
        for row in range(len(ids)):
            banned = forbidden[normalise(anchors[start + row])]
            admissible = []
            ranks = np.flatnonzero(window[row])
            looked_at = zip(ranks.tolist(), ids[row, ranks].tolist(), scores[row, ranks].tolist(), score_ok[row, ranks])
            for rank, c, score, ok in looked_at:
                if normalised[c] in banned:
                    counts["removed_same_premise"] += 1
                elif ok:
                    admissible.append((candidates[c], score, rank))
            counts["admissible_candidates"] += len(admissible)
            if config.sampling == "random" and len(admissible) > config.num_negatives:
                chosen = sorted(rng.choice(len(admissible), config.num_negatives, replace=False))
                admissible = [admissible[j] for j in chosen]
            picks.append(admissible[: config.num_negatives])
    out = _arrange(mnr, picks, config, dict(zip(zip(mnr["anchor"], mnr["positive"]), positive_scores.tolist())))
    facts = {"index": index.kind, "recall_at_10": recall_at_k(index, anchor_vectors, k=min(10, k))} | counts
    return out, facts


def diagnostics(mnr: pd.DataFrame, triplets: pd.DataFrame, config: MiningConfig) -> dict:
    """What a practitioner checks first: coverage, shortfall, and the similarity gap."""
    per_anchor = triplets.groupby(["anchor", "positive"]).size() if config.layout == "rows" else None
    got = len(per_anchor) if per_anchor is not None else len(triplets)
    short = len(mnr) - (int((per_anchor >= config.num_negatives).sum()) if per_anchor is not None else got)
    facts: dict = {
        "strategy": config.strategy,
        "pairs": len(mnr),
        "rows": len(triplets),
        "pairs_with_negatives": got,
        "share_short_of_negatives": round(short / max(1, len(mnr)), 4),
    }
    score_columns = [c for c in triplets.columns if c.startswith("negative") and c.endswith("score")]
    if triplets["positive_score"].notna().any():  # a strategy that scores
        facts["mean_positive_score"] = round(float(triplets["positive_score"].mean()), 4)
        facts["mean_negative_score"] = round(float(triplets[score_columns].stack().mean()), 4)
    return facts


def texts_to_encode(mnr: pd.DataFrame, pool: list[str]) -> list[str]:
    """Each distinct anchor, positive and candidate once, in first-seen order."""
    return list(dict.fromkeys([*mnr["anchor"], *mnr["positive"], *pool]))


def mine_semi_hard(
    mnr: pd.DataFrame,
    raw_pairs: pd.DataFrame,
    miner,
    data_dir: str | Path,
    config: MiningConfig,
    progress: Callable[[float], None] | None = None,
    index: StoredIndex | None = None,
) -> tuple[pd.DataFrame, dict]:
    """Encode anchors, positives and candidates once each (cached), then mine; returns negatives and facts.
    ``index``: the candidates' index kept by ``candidate_index``'s artifact (None: built here)."""
    pool = candidate_pool(raw_pairs)
    texts = texts_to_encode(mnr, pool)
    vectors, encoded = encode_cached(data_dir, miner, texts, progress=progress)
    row = {t: i for i, t in enumerate(texts)}

    def rows(items) -> np.ndarray:
        return vectors[[row[t] for t in items]]

    candidates = rows(pool)
    searched = None if index is None else index.open(candidates)
    triplets, facts = semi_hard_negatives(
        mnr, raw_pairs, rows(mnr["anchor"]), rows(mnr["positive"]), candidates, config, index=searched
    )
    return triplets, facts | {"encoded_texts": encoded}
