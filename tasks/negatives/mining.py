"""One mining run: the strategy asked for, and what it found (diagnostics, and for semi-hard the search)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict

import pandas as pd

from tasks.models.resolve import ResolvedModel
from tasks.negatives import strategies


def mine(
    pairs: pd.DataFrame,
    nli: pd.DataFrame,
    config: strategies.MiningConfig,
    miner: ResolvedModel | None,
    data_dir: str,
    progress: Callable[[float], None] | None = None,
) -> tuple[pd.DataFrame, dict]:
    """Triplets for ``pairs`` (anchor, positive) with negatives drawn from ``nli`` (every row of the source),
    and the facts the manifest keeps: diagnostics, and for semi-hard the miner and the search."""
    facts: dict = {}
    if config.strategy == "soft":
        triplets = strategies.soft_negatives(pairs, nli, config)
    elif config.strategy == "contradiction":
        triplets = strategies.contradiction_negatives(pairs, nli, config)
    else:
        if miner is None:
            raise ValueError("negatives='semi-hard' needs a miner model")
        triplets, search = strategies.mine_semi_hard(pairs, nli, miner, data_dir, config, progress)
        facts = {"miner": asdict(miner), "encoded_texts": search.pop("encoded_texts"), "search": search}
    if triplets.empty:
        raise ValueError(f"negatives={config.strategy!r} found no negative for any of {len(pairs)} pairs")
    facts["diagnostics"] = strategies.diagnostics(pairs, triplets, config) | facts.get("search", {})
    return triplets, facts
