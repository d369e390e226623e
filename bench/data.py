"""What the benchmarks train and mine on: the bundled MNLI sample and the bundled MiniLM."""

from __future__ import annotations

from pathlib import Path

MINILM = "sentence-transformers/all-MiniLM-L6-v2"


def triplets(folder: Path, negatives: str = "soft") -> Path:
    """(anchor, positive, negative) Parquet of the bundled sample: soft, or semi-hard mined with MiniLM."""
    import pandas as pd

    from tasks.labels import mnr_pairs
    from tasks.models import resolve_model
    from tasks.negatives import MiningConfig, mine_semi_hard, soft_negatives
    from tasks.sources import DEFAULT_NLI_SAMPLE

    raw = pd.read_parquet(DEFAULT_NLI_SAMPLE)[["premise", "hypothesis", "label"]]
    mnr = mnr_pairs(raw)
    if negatives == "semi-hard":
        mined, _ = mine_semi_hard(mnr, raw, resolve_model(MINILM), folder, MiningConfig(strategy="semi-hard"))
    else:
        mined = soft_negatives(mnr, raw, MiningConfig())
    path = folder / "triplets.parquet"
    mined[["anchor", "positive", "negative"]].to_parquet(path)
    return path
