"""Load and validate the NLI pairs a run trains on: GLUE MNLI from the hub, or a local file or folder.

Everything here runs before any model is loaded, so bad input fails in seconds with a
message that names the file, the column or row, and what is wrong.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pandas as pd

from tasks.pairs.tables import REPO_ROOT, SAMPLES, DataError, read_table, require_columns, require_texts
from tasks.store.artifacts import file_sha256

NLI_COLUMNS = ("premise", "hypothesis", "label")
NLI_LABELS = {0: "entailment", 1: "neutral", 2: "contradiction"}
LOCAL_SUFFIXES = (".parquet", ".tsv", ".csv", ".jsonl", ".json")
HUB_SOURCES = {"glue/mnli": "mnli"}  # source name → config of the GLUE dataset repo
DEFAULT_NLI_SAMPLE = SAMPLES / "mnli" / "train.parquet"


def is_hub_source(source: str) -> bool:
    return source in HUB_SOURCES


def glue_repo() -> str:
    """The hub dataset holding GLUE; a mirror or a local copy in the hub's layout can stand in."""
    return os.environ.get("TRAIN_EMBEDDINGS_GLUE_REPO", "nyu-mll/glue")


def resolve_local(source: str | Path) -> Path:
    """The one data file a local source names: a file, or a folder holding ``train.*`` or a single file."""
    path = Path(source).expanduser()
    if not path.is_absolute() and not path.exists() and (REPO_ROOT / path).exists():
        path = REPO_ROOT / path
    if not path.exists():
        raise DataError(f"{path}: file not found (expected a local file or folder, or one of {sorted(HUB_SOURCES)})")
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.suffix in LOCAL_SUFFIXES)
        train = [p for p in files if p.stem == "train"]
        if len(train) == 1:
            return train[0]
        if len(files) == 1:
            return files[0]
        raise DataError(f"{path}: folder must hold one data file or a train.* file, found {[p.name for p in files]}")
    if path.suffix not in LOCAL_SUFFIXES:
        raise DataError(f"{path}: unsupported file type {path.suffix!r}; use one of {', '.join(LOCAL_SUFFIXES)}")
    return path


def source_fingerprint(source: str) -> dict[str, str]:
    """What identifies a source's content: the hub id, or the local file's checksum."""
    if is_hub_source(source):
        return {"kind": "hub", "repo": glue_repo(), "config": HUB_SOURCES[source], "split": "train"}
    path = resolve_local(source)
    return {"kind": "local", "file": path.name, "sha256": file_sha256(path)}


def validate_nli(df: pd.DataFrame, origin: str) -> pd.DataFrame:
    """Check an NLI table and return it as (premise, hypothesis, label:int64)."""
    require_columns(df, NLI_COLUMNS, origin)
    if df.empty:
        raise DataError(f"{origin}: no rows")
    require_texts(df, ("premise", "hypothesis"), origin)
    labels = pd.to_numeric(df["label"], errors="coerce")
    bad = labels.isna() | ~labels.isin(list(NLI_LABELS))
    if bad.any():
        row = int(bad.to_numpy().nonzero()[0][0])
        raise DataError(
            f"{origin}: column 'label' row {row}: {df['label'].iloc[row]!r} is not a label in 0-2 "
            f"(0 entailment, 1 neutral, 2 contradiction; {int(bad.sum())} such row(s))"
        )
    return pd.DataFrame(
        {
            "premise": df["premise"].astype(str).to_numpy(),
            "hypothesis": df["hypothesis"].astype(str).to_numpy(),
            "label": labels.astype("int64").to_numpy(),
        }
    )


def load_hub_nli(repo: str, config: str, split: str, max_pairs: int | None) -> pd.DataFrame:
    """The seed's loading: ``load_dataset("glue", "mnli", split="train")``, first ``max_pairs`` rows."""
    from datasets import load_dataset

    dataset = load_dataset(repo, config, split=split)
    if max_pairs is not None:
        dataset = dataset.select(range(min(max_pairs, len(dataset))))
    return dataset.to_pandas()


def load_nli_pairs(source: str, max_pairs: int | None) -> tuple[pd.DataFrame, str]:
    """Validated NLI pairs and a description of where they came from."""
    if is_hub_source(source):
        repo, config = glue_repo(), HUB_SOURCES[source]
        df = load_hub_nli(repo, config, "train", max_pairs)
        return validate_nli(df, f"hub {repo}/{config}"), f"hub:{repo}/{config}"
    path = resolve_local(source)
    df = read_table(path)
    df = validate_nli(df, str(path))
    if max_pairs is not None:
        df = df.head(max_pairs).reset_index(drop=True)
    return df, f"local:{path}"


def describe_nli(df: pd.DataFrame) -> str:
    counts = df["label"].value_counts().sort_index()
    return json.dumps({NLI_LABELS[int(k)]: int(v) for k, v in counts.items()})
