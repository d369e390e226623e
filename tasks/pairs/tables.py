"""Reading the tables users hand in (Parquet, TSV, CSV, JSONL, JSON, each optionally gzipped), with errors that
name the file, column and row.

Everything here runs before any model is loaded, so bad input fails in seconds with a message
that says what is wrong and where. The NLI sources and the evaluation data both read through it.
Only regular files are opened: a FIFO would block and a device (``/dev/zero``) never end.
"""

from __future__ import annotations

import functools
import gzip
import logging
import re
import stat
import unicodedata
import zlib
from pathlib import Path

import pandas as pd
import pyarrow as pa

from tasks.pairs import formats
from tasks.store.environment import REPO_ROOT

log = logging.getLogger(__name__)

SAMPLES = REPO_ROOT / "data" / "samples"  # the bundled real samples: MNLI, STS-B, Banking77
FORMATS = ("parquet", "tsv", "csv", "jsonl", "json")
DATA_SUFFIXES = (*(f".{f}" for f in FORMATS), *(f".{f}.gz" for f in FORMATS))  # matched in any case
SUFFIXES = ".parquet, .tsv, .csv, .jsonl or .json, each optionally .gz"
PANDAS_INDEX = re.compile(r"__index_level_\d+__")  # a stored pandas index, not a column of the table
SURROGATE = re.compile("[\ud800-\udfff]")  # JSON's "\\ud800" escapes decode to them
# What BERT-style tokenizers drop: control, format, private-use, whitespace and combining characters, and U+FFFD.
# A text of these alone tokenises like "" (zero-width spaces, byte-order marks, NULs, ...).
INVISIBLE = frozenset({"Cc", "Cf", "Co", "Cs", "Mn", "Zl", "Zp", "Zs"})
SPECIAL = {
    stat.S_ISFIFO: "a FIFO",
    stat.S_ISCHR: "a character device",
    stat.S_ISBLK: "a block device",
    stat.S_ISSOCK: "a socket",
    stat.S_ISDIR: "a folder",
}


class DataError(ValueError):
    """Input data that cannot be used; the message names the file, the column or row and the problem."""


def data_format(path: Path) -> tuple[str, bool] | None:
    """The format a file name says (``B.PARQUET``: parquet; ``x.csv.gz``: gzipped csv), or None."""
    name = path.name.lower()
    compressed = name.endswith(".gz")
    fmt = Path(name.removesuffix(".gz")).suffix[1:]
    return (fmt, compressed) if fmt in FORMATS else None


def require_regular_file(path: Path) -> None:
    """Refuse, without opening it, anything that is not a regular file (a link to one is fine)."""
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        raise DataError(f"{path}: file not found") from None
    except OSError as exc:
        raise DataError(f"{path}: cannot read: {exc}") from None
    if not stat.S_ISREG(mode):
        kind = next((name for test, name in SPECIAL.items() if test(mode)), "a special file")
        raise DataError(f"{path}: {kind}, not a regular file; only regular data files are read")


def folder_entries(folder: Path) -> tuple[list[Path], list[str]]:
    """A folder's data files by name, and what it holds besides (named, so nothing is left out unseen). A
    special file named as data (a FIFO ``x.jsonl``) is refused, not opened."""
    data, skipped = [], []
    for entry in sorted(folder.iterdir(), key=lambda p: p.name):
        if entry.name.startswith("."):
            skipped.append(f"{entry.name} (hidden)")
        elif entry.is_dir():
            skipped.append(f"{entry.name}/ (a sub-folder: not read)")
        elif data_format(entry) is None:
            skipped.append(f"{entry.name} (not {SUFFIXES})")
        else:
            require_regular_file(entry)
            data.append(entry)
    return data, skipped


@functools.cache  # once per folder and contents: a run lists its source four times
def warn_skipped(folder: str, skipped: tuple[str, ...]) -> None:
    log.warning("%s: left out of the source: %s", folder, "; ".join(skipped))


def _format(path: Path) -> tuple[str, bool]:
    found = data_format(path)
    if found is None:
        raise DataError(f"{path}: unsupported file type {path.suffix!r}; use {SUFFIXES}")
    require_regular_file(path)
    return found


def _read_bytes(path: Path, compressed: bool, first_line: bool = False) -> bytes:
    """The file's bytes (or only its first line), decompressed; a broken gzip stream is named."""
    try:
        with gzip.open(path) if compressed else open(path, "rb") as handle:
            return handle.readline() if first_line else handle.read()
    except (gzip.BadGzipFile, EOFError, zlib.error) as exc:
        raise DataError(f"{path}: not a valid gzip file: {exc}") from None


def _parquet_source(path: Path, compressed: bool):
    return pa.BufferReader(_read_bytes(path, True)) if compressed else path


def read_table(path: Path) -> pd.DataFrame:
    """Read a local table as written; any reader failure becomes a DataError naming the file."""
    fmt, compressed = _format(path)
    try:
        if fmt == "parquet":
            df = formats.read_parquet(_parquet_source(path, compressed))
            return df[[c for c in df.columns if not PANDAS_INDEX.fullmatch(str(c))]]
        data = _read_bytes(path, compressed)
        if fmt in formats.DIALECTS:
            return formats.read_delimited(data, fmt)
        return formats.read_jsonl(data) if fmt == "jsonl" else formats.read_json(data)
    except DataError:
        raise
    except formats.FormatError as exc:
        raise DataError(f"{path}: {exc}") from None
    except Exception as exc:  # pyarrow and the decompressors raise many types
        raise DataError(f"{path}: cannot read .{fmt} file: {exc}") from exc


def read_columns(path: Path) -> tuple[str, ...]:
    """A table's column names without reading its rows (Parquet schema, CSV/TSV header, first JSONL record),
    so what a source holds is known before anything loads."""
    fmt, compressed = _format(path)
    try:
        if fmt == "parquet":
            names = formats.parquet_names(_parquet_source(path, compressed))
            return tuple(n for n in names if not PANDAS_INDEX.fullmatch(n))
        if fmt in formats.DIALECTS:
            return tuple(formats.delimited_records(formats.decode(_read_bytes(path, compressed, True)), fmt, True)[0])
        if fmt == "jsonl":
            return tuple(_first_record(path, compressed))
    except DataError:
        raise
    except formats.FormatError:
        pass  # a header spanning lines, or a bad one: the full read below names the line
    except Exception as exc:  # pyarrow and the decompressors raise many types
        raise DataError(f"{path}: cannot read .{fmt} file: {exc}") from exc
    return tuple(read_table(path).columns)


def _first_record(path: Path, compressed: bool) -> dict:
    """The first JSON object of a .jsonl file, reading only up to it."""
    lines = []
    with gzip.open(path) if compressed else open(path, "rb") as handle:
        for line in handle:
            lines.append(line)
            if line.strip():
                break
    records = formats.jsonl_records(formats.decode(b"".join(lines)), first_only=True)
    return records[0] if records else {}


def require_columns(df: pd.DataFrame, columns: tuple[str, ...], origin: str, expected: str = "") -> None:
    twice = formats.duplicates([str(c) for c in df.columns])
    if twice:
        raise DataError(f"{origin}: column name(s) {twice} appear more than once; each column needs its own name")
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise DataError(f"{origin}: missing column(s) {missing}; found {list(df.columns)}{expected}")


def visible(text: str) -> bool:
    """Whether a text has a character a tokenizer keeps (not only invisible, control or combining ones)."""
    return any(unicodedata.category(c) not in INVISIBLE and c != "\ufffd" for c in text)


def text_problem(value: object) -> str | None:
    """What makes a value unusable as a text, or None for a text."""
    if not isinstance(value, str):
        return "non-text value"
    if not value.strip():
        return "empty text"
    if not value.isascii() and SURROGATE.search(value):
        return "text with a lone surrogate (not valid Unicode: it cannot be stored or tokenised)"
    if not visible(value):
        return "text of invisible characters only (zero-width, control or format characters; it tokenises as '')"
    return None


def require_texts(df: pd.DataFrame, columns: tuple[str, ...], origin: str) -> None:
    for column in columns:
        values = df[column]
        problems = values.map(text_problem)
        bad = problems.notna().to_numpy()
        if bad.any():
            row = int(bad.nonzero()[0][0])
            raise DataError(
                f"{origin}: column '{column}' row {row}: {problems.iloc[row]} {values.iloc[row]!r} "
                f"({int(bad.sum())} such row(s))"
            )
