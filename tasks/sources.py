"""Load and validate the pipeline's inputs: NLI pairs (hub or local), STS-B and Banking77.

Everything here runs before any model is loaded, so bad input fails in seconds with a
message that names the file, the column or row, and what is wrong.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pandas as pd

from tasks.artifacts import file_sha256

NLI_COLUMNS = ("premise", "hypothesis", "label")
NLI_LABELS = {0: "entailment", 1: "neutral", 2: "contradiction"}
LOCAL_SUFFIXES = (".parquet", ".tsv", ".csv", ".jsonl", ".json")
HUB_SOURCES = {"glue/mnli": "mnli"}  # source name → config of the GLUE dataset repo
REPO_ROOT = Path(__file__).resolve().parent.parent
SAMPLES = REPO_ROOT / "data" / "samples"
DEFAULT_NLI_SAMPLE = SAMPLES / "mnli" / "train.parquet"


class DataError(ValueError):
    """Input data that cannot be used; the message names the file, the column or row and the problem."""


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


def read_table(path: Path) -> pd.DataFrame:
    """Read a local table; any reader failure becomes a DataError naming the file."""
    try:
        if path.suffix == ".parquet":
            return pd.read_parquet(path)
        if path.suffix in (".tsv", ".csv"):
            sep = "\t" if path.suffix == ".tsv" else ","
            return pd.read_csv(path, sep=sep, keep_default_na=False, na_values=[""], encoding="utf-8")
        return pd.read_json(path, lines=path.suffix == ".jsonl")
    except Exception as exc:  # pyarrow, csv and json readers raise many types
        raise DataError(f"{path}: cannot read {path.suffix} file: {exc}") from exc


def _require_columns(df: pd.DataFrame, columns: tuple[str, ...], origin: str) -> None:
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise DataError(f"{origin}: missing column(s) {missing}; found {list(df.columns)}")


def _require_texts(df: pd.DataFrame, columns: tuple[str, ...], origin: str) -> None:
    for column in columns:
        values = df[column]
        bad = values.isna() | ~values.map(lambda v: isinstance(v, str))
        bad |= values.map(lambda v: not isinstance(v, str) or not v.strip())
        if bad.any():
            row = int(bad.to_numpy().nonzero()[0][0])
            raise DataError(
                f"{origin}: column '{column}' row {row}: empty or non-text value {values.iloc[row]!r} "
                f"({int(bad.sum())} such row(s))"
            )


def validate_nli(df: pd.DataFrame, origin: str) -> pd.DataFrame:
    """Check an NLI table and return it as (premise, hypothesis, label:int64)."""
    _require_columns(df, NLI_COLUMNS, origin)
    if df.empty:
        raise DataError(f"{origin}: no rows")
    _require_texts(df, ("premise", "hypothesis"), origin)
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


def load_sts(path: Path) -> pd.DataFrame:
    """STS-B pairs with gold scores in [0, 5]."""
    df = read_table(path)
    _require_columns(df, ("sentence1", "sentence2", "score"), str(path))
    _require_texts(df, ("sentence1", "sentence2"), str(path))
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
        _require_columns(df, ("text", "label_id"), str(path))
        _require_texts(df, ("text",), str(path))
        splits[split] = pd.DataFrame({"text": df["text"].astype(str), "label": df["label_id"].astype("int64")})
    return splits


def describe_nli(df: pd.DataFrame) -> str:
    counts = df["label"].value_counts().sort_index()
    return json.dumps({NLI_LABELS[int(k)]: int(v) for k, v in counts.items()})
