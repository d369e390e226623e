"""The bundled evaluation data: STS-B validation and test, Banking77 train and test, read and checked once.

These copies under ``data/samples`` let the anchors (STS-B test 0.8203, Banking77 0.8004 for the
bundled MiniLM) run offline. ``BUNDLED_FILES`` is what a score's data fingerprint hashes.
"""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd

from tasks.pairs.tables import SAMPLES, DataError, read_table, require_columns, require_texts

STSB_DIR = SAMPLES / "stsb"
BANKING77_DIR = SAMPLES / "banking77"
BUNDLED_FILES = {
    "stsb": [STSB_DIR / "validation.parquet", STSB_DIR / "test.parquet"],
    "Banking77Classification": [BANKING77_DIR / "train.parquet", BANKING77_DIR / "test.parquet"],
    "STSBenchmark": [STSB_DIR / "test.parquet"],
}


def load_sts(path: Path) -> pd.DataFrame:
    """STS-B pairs with gold scores in [0, 5]."""
    df = read_table(path)
    require_columns(df, ("sentence1", "sentence2", "score"), str(path))
    require_texts(df, ("sentence1", "sentence2"), str(path))
    scores = pd.to_numeric(df["score"], errors="coerce")
    bad = scores.isna() | (scores < 0) | (scores > 5)
    if bad.any():
        row = int(bad.to_numpy().nonzero()[0][0])
        raise DataError(f"{path}: column 'score' row {row}: {df['score'].iloc[row]!r} is not a score in [0, 5]")
    return pd.DataFrame({"sentence1": df["sentence1"], "sentence2": df["sentence2"], "score": scores.astype(float)})


def load_banking77(folder: Path) -> dict[str, pd.DataFrame]:
    """Banking77 train/test as (text, label:int 0-76)."""
    splits = {}
    for split in ("train", "test"):
        path = folder / f"{split}.parquet"
        if not path.exists():
            raise DataError(f"{path}: file not found")
        df = read_table(path)
        require_columns(df, ("text", "label_id"), str(path))
        require_texts(df, ("text",), str(path))
        splits[split] = pd.DataFrame({"text": df["text"].astype(str), "label": df["label_id"].astype("int64")})
    return splits


def stsb_pairs(split: str, limit: int | None = None) -> pd.DataFrame:
    """The bundled STS-B ``split`` (validation or test); ``limit`` keeps its first rows."""
    pairs = load_sts(STSB_DIR / f"{split}.parquet")
    return pairs.head(limit) if limit else pairs


def banking77_splits(limit: int | None = None) -> dict[str, pd.DataFrame]:
    """The bundled Banking77 train/test; ``limit`` keeps a stratified head of each split."""
    splits = load_banking77(BANKING77_DIR)
    if limit:
        per_label = max(1, math.ceil(limit / 77))
        splits = {
            name: df.groupby("label", sort=False).head(per_label).reset_index(drop=True) for name, df in splits.items()
        }
    return splits


def bundled_task_data(name: str, limit: int | None) -> dict[str, pd.DataFrame] | None:
    """The bundled splits of an MTEB task, or None for a task mteb loads from the hub."""
    if name == "Banking77Classification":
        return banking77_splits(limit)
    if name == "STSBenchmark":
        return {"test": stsb_pairs("test", limit)}
    return None


def evaluation_texts() -> list[str]:
    """The texts the default evaluation encodes: STS-B validation and test pairs, Banking77 train and test
    (what encoding benchmarks and the exports' speed comparison time)."""
    texts: list[str] = []
    for split in ("validation", "test"):
        pairs = stsb_pairs(split, None)
        texts += [*pairs["sentence1"], *pairs["sentence2"]]
    for frame in banking77_splits().values():
        texts += frame["text"].tolist()
    return texts
