"""Reading the tables users hand in (Parquet, TSV, CSV, JSONL), with errors that name the file, column and row.

Everything here runs before any model is loaded, so bad input fails in seconds with a message
that says what is wrong and where. The NLI sources and the evaluation data both read through it.
"""

from __future__ import annotations

import csv
import json
import re
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq

from tasks.store.environment import REPO_ROOT

SAMPLES = REPO_ROOT / "data" / "samples"  # the bundled real samples: MNLI, STS-B, Banking77
DATA_SUFFIXES = (".parquet", ".tsv", ".csv", ".jsonl", ".json")
PANDAS_INDEX = re.compile(r"__index_level_\d+__")  # a stored pandas index, not a column of the table


class DataError(ValueError):
    """Input data that cannot be used; the message names the file, the column or row and the problem."""


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


def read_columns(path: Path) -> tuple[str, ...]:
    """A table's column names without reading its rows (Parquet schema, CSV/TSV header, first JSONL record),
    so what a source holds is known before anything loads."""
    try:
        if path.suffix == ".parquet":
            return tuple(n for n in pq.read_schema(path).names if not PANDAS_INDEX.fullmatch(n))
        if path.suffix in (".tsv", ".csv"):
            with open(path, newline="", encoding="utf-8") as handle:
                return tuple(next(csv.reader(handle, delimiter="\t" if path.suffix == ".tsv" else ","), []))
        if path.suffix == ".jsonl":
            with open(path, encoding="utf-8") as handle:
                first = next((line for line in handle if line.strip()), "{}")
            return tuple(json.loads(first))
    except Exception as exc:  # pyarrow, csv and json raise many types
        raise DataError(f"{path}: cannot read {path.suffix} file: {exc}") from exc
    return tuple(read_table(path).columns)


def require_columns(df: pd.DataFrame, columns: tuple[str, ...], origin: str, expected: str = "") -> None:
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise DataError(f"{origin}: missing column(s) {missing}; found {list(df.columns)}{expected}")


def require_texts(df: pd.DataFrame, columns: tuple[str, ...], origin: str) -> None:
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
