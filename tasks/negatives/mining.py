"""One mining run: the strategy asked for, and what it found (diagnostics, and for semi-hard the search)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pandas as pd

from tasks.models.resolve import ResolvedModel
from tasks.negatives import strategies
from tasks.negatives.embeddings import encode_cached
from tasks.negatives.index import CALIBRATION_QUERIES, SearchIndex, StoredIndex, build_index
from tasks.pairs.labels import CONTRADICTION, ENTAILMENT, normalise


def why_no_negatives(pairs: pd.DataFrame, nli: pd.DataFrame, strategy: str) -> str | None:
    """Why no pair can get a negative, known from the texts alone (before a miner encodes anything);
    None when some pair can. "Found no negative" alone would hide a source too small or too uniform."""
    if pairs.empty:
        if "label" in nli and not (nli["label"] == ENTAILMENT).any():
            return f"the source's {len(nli)} row(s) hold no entailment rows to take positives from"
        return "there are no pairs to find negatives for"
    if strategy == "contradiction":
        contradicted = nli[nli["label"] == CONTRADICTION] if "label" in nli else nli.head(0)
        if contradicted.empty:
            return (
                f"the source's {len(nli)} row(s) hold no contradiction rows (label {CONTRADICTION}) to take them from"
            )
        premises = {normalise(p) for p in contradicted["premise"]}
        if not any(normalise(a) in premises for a in pairs["anchor"]):
            return (
                f"none of the {len(pairs)} pairs' anchors has a contradiction hypothesis of its own: the source's "
                f"{len(contradicted)} contradiction row(s) have other premises"
            )
        return None
    candidates = {normalise(h) for h in nli["hypothesis"]}
    forbidden = strategies.forbidden_texts(nli)
    anchors = {normalise(a) for a in pairs["anchor"]}
    if any(len(candidates) > len(candidates & forbidden[a]) for a in anchors):
        return None
    if len(anchors | {normalise(p) for p in nli["premise"]}) == 1:
        if len(pairs) == 1:
            return "it needs at least 2 pairs (a negative is another pair's text), and there is only 1"
        return (
            f"every pair has the same anchor ({pairs['anchor'].iloc[0][:80]!r}), so no other anchor's text can be "
            f"its negative ({len(pairs)} pairs)"
        )
    return "every text of the source is paired with each pair's anchor (or is the anchor), so none can be a negative"


def nothing_found(pairs: pd.DataFrame, config: strategies.MiningConfig, search: dict) -> str:
    """Why the strategy ran and still found nothing: the rules that removed the candidates it looked at."""
    said = f"negatives={config.strategy!r} found no negative for any of {len(pairs)} pairs"
    if config.strategy == "semi-hard":
        removed = {k.removeprefix("removed_"): v for k, v in search.items() if k.startswith("removed_") and v}
        return (
            f"{said}: of {search.get('window_candidates', 0)} candidates in the rank window [{config.range_min}, "
            f"{config.range_max}), the rules removed {removed} (margin {config.margin}, max_score "
            f"{config.max_score}, relative_margin {config.relative_margin})"
        )
    if config.strategy == "soft":
        return f"{said} in {100 * config.num_negatives} random draws each: nearly every text is paired with its anchor"
    return f"{said}: every contradiction hypothesis of an anchor is also one of its positives"


def mine(
    pairs: pd.DataFrame,
    nli: pd.DataFrame,
    config: strategies.MiningConfig,
    miner: ResolvedModel | None,
    data_dir: str,
    progress: Callable[[float], None] | None = None,
    index: Callable[[], StoredIndex] | None = None,
) -> tuple[pd.DataFrame, dict]:
    """Triplets for ``pairs`` (anchor, positive) with negatives drawn from ``nli`` (every row of the source),
    and the facts the manifest keeps: diagnostics, and for semi-hard the miner and the search (``index``: gives the
    candidates' kept index, asked for only once the texts show negatives can be found)."""
    facts: dict = {}
    reason = why_no_negatives(pairs, nli, config.strategy)
    if reason is not None:
        raise ValueError(f"negatives={config.strategy!r}: {reason}")
    if config.strategy == "soft":
        triplets = strategies.soft_negatives(pairs, nli, config)
    elif config.strategy == "contradiction":
        triplets = strategies.contradiction_negatives(pairs, nli, config)
    else:
        if miner is None:
            raise ValueError("negatives='semi-hard' needs a miner model")
        triplets, search = strategies.mine_semi_hard(
            pairs, nli, miner, data_dir, config, progress, None if index is None else index()
        )
        facts = {"miner": asdict(miner), "encoded_texts": search.pop("encoded_texts"), "search": search}
    if triplets.empty:
        raise ValueError(nothing_found(pairs, config, facts.get("search", {})))
    facts["diagnostics"] = strategies.diagnostics(pairs, triplets, config) | facts.get("search", {})
    return triplets, facts


def candidate_index(
    raw_pairs: pd.DataFrame,
    miner,
    data_dir: str | Path,
    config: strategies.MiningConfig,
    progress: Callable[[float], None] | None = None,
) -> tuple[SearchIndex, int]:
    """The search index over the source's candidates, encoded through the cache (and how many texts were
    encoded now): what every mining run of this miner and source searches, so it is built once and kept. An
    IVF index is calibrated on a sample of the source's premises, the anchors mining searches for."""
    pool, premises = strategies.candidate_pool(raw_pairs), list(dict.fromkeys(raw_pairs["premise"]))
    drawn = np.random.default_rng(config.seed).choice(len(premises), min(len(premises), CALIBRATION_QUERIES), False)
    sample = [premises[i] for i in sorted(drawn)]
    texts = list(dict.fromkeys([*pool, *sample]))  # the pool first, as its rows
    vectors, encoded = encode_cached(data_dir, miner, texts, progress=progress)
    row = {t: i for i, t in enumerate(texts)}
    queries = vectors[[row[t] for t in sample]]
    return build_index(vectors[: len(pool)], config.exact_limit, config.seed, queries=queries), encoded
