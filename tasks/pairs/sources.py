"""Load and validate the pairs a run trains on: a hub dataset pinned by revision, or a local file or folder.

A source holds NLI rows (premise, hypothesis, label), pairs (anchor, positive) or triplets (anchor,
positive, negative); its kind follows from its columns and decides which losses it can train. A local
folder is one source that grows: all its data files in file-name order, so a file added later (sorting
after) never shifts the rows before it. Everything here runs before any model is loaded, so bad input
fails in seconds with a message that names the file or dataset, the column or row, and what is wrong.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from tasks.pairs import hub
from tasks.pairs.labels import NLI_LABELS, as_label
from tasks.pairs.tables import (
    DATA_SUFFIXES,
    SAMPLES,
    SUFFIXES,
    DataError,
    data_format,
    folder_entries,
    read_columns,
    read_table,
    require_columns,
    require_regular_file,
    require_texts,
    warn_skipped,
)
from tasks.store.artifacts import file_sha256
from tasks.store.environment import REPO_ROOT

log = logging.getLogger(__name__)

NLI_COLUMNS = ("premise", "hypothesis", "label")
PAIR_COLUMNS = ("anchor", "positive")
NEGATIVE = re.compile(r"negative(_\d+)?")  # a triplet's negative column: negative, or negative_1..n
NO_GOLD_LABEL = -1  # the hub's NLI datasets (SNLI, MNLI) mark rows the annotators did not agree on
KINDS = ("nli", "pairs", "triplets")
LABELLED_LOSSES = ("softmax", "cosine")  # they train on the NLI label; mnr and gist on anchor/positive(/negative)
EXPECTED = "; expected NLI columns (premise, hypothesis, label) or pairs (anchor, positive[, negative])"
DEFAULT_NLI_SAMPLE = SAMPLES / "mnli" / "train.parquet"


@dataclass(frozen=True)
class LoadedSource:
    """Validated rows, where they came from (with the commit or files read), and their kind."""

    frame: pd.DataFrame
    origin: str
    kind: str  # "nli": premise, hypothesis, label; "pairs": anchor, positive; "triplets": and negative(s)


def local_path(source: str | Path) -> Path | None:
    """The local file or folder ``source`` names, if one exists (a local path wins over a hub name)."""
    path = Path(source).expanduser()
    if not path.exists() and not path.is_absolute() and (REPO_ROOT / path).exists():
        path = REPO_ROOT / path
    return path if path.exists() else None


def hub_source(source: str) -> hub.HubSource | None:
    return None if local_path(source) is not None else hub.parse_hub_source(source)


def local_files(source: str | Path) -> list[Path]:
    """The data files a local source reads, in order: the file itself, or every data file of the folder by name."""
    path = local_path(source)
    if path is None:
        raise DataError(
            f"{Path(source).expanduser()}: file not found (expected a local file or folder, or a hub dataset "
            f"as <org>/<name>[:<config>][@<revision>], or {hub.GLUE_ALIAS!r})"
        )
    if path.is_dir():
        data, skipped = folder_entries(path)
        if not data:
            found = f"; found only {skipped}" if skipped else ""
            raise DataError(f"{path}: folder holds no data files ({SUFFIXES}){found}")
        if skipped:
            warn_skipped(str(path), tuple(skipped))
        return data
    if data_format(path) is None:
        raise DataError(f"{path}: unsupported file type {path.suffix!r}; use {SUFFIXES}")
    require_regular_file(path)
    return [path]


def pin_source(source: str) -> str:
    """The source as read now: a hub name with its branch resolved to a commit sha, a local source as given.
    Call once when the run starts and pass the result on, so the key and the rows read are the same commit."""
    spec = hub_source(source)
    if spec is None:
        local_files(source)  # a missing local source fails here, before anything loads
        return source
    pinned = spec.pinned(hub.resolve_revision(spec))
    log.info("nli_source %s reads %s", source, pinned)
    return pinned


def source_fingerprint(source: str) -> dict:
    """What identifies a source's content, cheaply and without downloading data: the hub commit, or the
    local files' names and checksums (a single file keeps its earlier form, and so its artifacts)."""
    spec = hub_source(source)
    if spec is not None:
        revision = hub.resolve_revision(spec)
        return {"kind": "hub", "repo": spec.repo, "config": spec.config, "split": hub.SPLIT, "revision": revision}
    files = local_files(source)
    if local_path(source).is_file():
        return {"kind": "local", "file": files[0].name, "sha256": file_sha256(files[0])}
    return {"kind": "local-folder", "files": [{"file": p.name, "sha256": file_sha256(p)} for p in files]}


def negative_columns(columns: Iterable[str]) -> list[str]:
    """The negative columns among ``columns``, in their order: what makes a source triplets, and what
    the ranking losses read after anchor and positive."""
    return [c for c in columns if NEGATIVE.fullmatch(str(c))]


def kind_of(columns: Iterable[str]) -> str:
    """NLI when premise, hypothesis and label are all there; pairs or triplets when anchor or positive is."""
    names = set(columns)
    if set(NLI_COLUMNS) <= names or not names & set(PAIR_COLUMNS):
        return "nli"  # incomplete NLI columns: validation names the missing ones
    return "triplets" if negative_columns(names) else "pairs"


def source_columns(source: str) -> tuple[str, ...]:
    """The columns a source holds, read before anything loads: local headers or schemas, or for the hub
    the first data file of the commit's chosen config (fetched into the cache, as the load will need it)."""
    spec = hub_source(source)
    if spec is None:
        files = local_files(source)
        columns = read_columns(files[0])
        for path in files[1:]:
            same_kind(read_columns(path), columns, path, files[0])
        return columns
    revision = hub.resolve_revision(spec)
    snapshot = hub.fetch_snapshot(spec, revision)
    first = snapshot.files[0]
    if first.suffix in DATA_SUFFIXES:
        return read_columns(first)
    return tuple(hub.read_dataset(snapshot, f"{spec.label}@{revision}").column_names)


def check_loss_fits(
    columns_or_kind: str | Iterable[str], loss: str, negatives: str = "none", source: str | None = None
) -> None:
    """Refuse, before anything loads, a loss (or negatives strategy) that needs NLI labels the source lacks;
    ``source`` names it in the message."""
    columns = None if isinstance(columns_or_kind, str) else tuple(columns_or_kind)
    kind = kind_of(columns) if columns is not None else columns_or_kind
    if kind not in KINDS:
        raise ValueError(f"source kind must be one of {KINDS}, got {kind!r}")
    found = f"columns {list(columns)}" if columns is not None else f"{kind} columns"
    at = f"{source}: " if source else ""
    if kind != "nli" and loss in LABELLED_LOSSES:
        raise ValueError(
            f"{at}loss {loss!r} needs NLI labels (premise, hypothesis, label), but the source has {found}; "
            "use loss 'mnr' or 'gist', which train on anchor/positive(/negative) directly"
        )
    if kind != "nli" and negatives == "contradiction":
        raise ValueError(f"{at}negatives 'contradiction' needs NLI labels, but the source has {found}")
    if kind == "triplets" and negatives != "none":
        raise ValueError(f"{at}negatives {negatives!r}: the source has its own negatives ({found}); use 'none'")


def same_kind(columns: Iterable[str], first: Iterable[str], path: Path, first_path: Path) -> None:
    """A folder's files must hold the same kind of rows, or the concatenation would mix formats."""
    if kind_of(columns) != kind_of(first):
        raise DataError(
            f"{path}: {kind_of(columns)} columns {list(columns)}, but {first_path.name} holds "
            f"{kind_of(first)} columns {list(first)}; all files of a folder must hold the same kind"
        )
    if set(negative_columns(columns)) != set(negative_columns(first)):
        raise DataError(
            f"{path}: negative column(s) {negative_columns(columns)}, but {first_path.name} holds "
            f"{negative_columns(first)}; all files of a folder must hold the same ones (a row would lack one)"
        )


def validate_nli(df: pd.DataFrame, origin: str) -> pd.DataFrame:
    """Check an NLI table and return it as (premise, hypothesis, label:int64)."""
    require_columns(df, NLI_COLUMNS, origin, EXPECTED)
    if df.empty:
        raise DataError(f"{origin}: no rows")
    require_texts(df, ("premise", "hypothesis"), origin)
    labels = df["label"].map(as_label)
    bad = labels.isna().to_numpy()
    if bad.any():
        row = int(bad.nonzero()[0][0])
        named = ", ".join(f"{number} {name}" for number, name in NLI_LABELS.items())
        raise DataError(
            f"{origin}: column 'label' row {row}: {df['label'].iloc[row]!r} is not a label in "
            f"{min(NLI_LABELS)}-{max(NLI_LABELS)} ({named}: the integers, not booleans, timestamps or other "
            f"values; {int(bad.sum())} such row(s))"
        )
    return pd.DataFrame(
        {
            "premise": df["premise"].astype(str).to_numpy(),
            "hypothesis": df["hypothesis"].astype(str).to_numpy(),
            "label": labels.astype("int64").to_numpy(),
        }
    )


def validate_pairs(df: pd.DataFrame, origin: str) -> pd.DataFrame:
    """Check a pairs or triplets table and return its text columns: anchor, positive, then any negatives."""
    require_columns(df, PAIR_COLUMNS, origin, EXPECTED)
    if df.empty:
        raise DataError(f"{origin}: no rows")
    columns = (*PAIR_COLUMNS, *negative_columns(df.columns))
    require_texts(df, columns, origin)
    return pd.DataFrame({c: df[c].astype(str).to_numpy() for c in columns})


def validate_table(df: pd.DataFrame, origin: str) -> tuple[pd.DataFrame, str]:
    kind = kind_of(df.columns)
    return (validate_nli(df, origin) if kind == "nli" else validate_pairs(df, origin)), kind


def load_local(source: str, max_pairs: int | None) -> LoadedSource:
    """Every file validated on its own (errors name it), then concatenated in order; the first rows kept."""
    files = local_files(source)
    frames, kinds = [], []
    for path in files:
        frame, kind = validate_table(read_table(path), str(path))
        if frames:
            same_kind(frame.columns, frames[0].columns, path, files[0])
        frames.append(frame)
        kinds.append(kind)
    df = pd.concat(frames, ignore_index=True)
    if max_pairs is not None:
        df = df.head(max_pairs).reset_index(drop=True)
    return LoadedSource(df, f"local:{local_path(source)}", kinds[0])


def gold_labelled(dataset, label: str):
    """NLI rows with a gold label: the hub's -1 rows (no annotator agreement) would fail validation."""
    if kind_of(dataset.column_names) != "nli" or "label" not in dataset.column_names:
        return dataset
    kept = dataset.filter(lambda labels: [x != NO_GOLD_LABEL for x in labels], input_columns="label", batched=True)
    if len(kept) < len(dataset):
        log.info("%s: left out %d rows without a gold label (-1)", label, len(dataset) - len(kept))
    return kept


def load_hub(spec: hub.HubSource, max_pairs: int | None) -> LoadedSource:
    """The commit's train split through datasets; NLI rows without a gold label dropped, the first rows kept."""
    revision = hub.resolve_revision(spec)
    label = f"{spec.label}@{revision}"
    dataset = gold_labelled(hub.read_dataset(hub.fetch_snapshot(spec, revision), label), label)
    if max_pairs is not None:
        dataset = dataset.select(range(min(max_pairs, len(dataset))))
    frame, kind = validate_table(dataset.to_pandas(), f"hub {label}")
    return LoadedSource(frame, f"hub:{label}", kind)


def load_source(source: str, max_pairs: int | None) -> LoadedSource:
    """Validated rows of any kind, the first ``max_pairs`` of them, and where they came from."""
    spec = hub_source(source)
    return load_local(source, max_pairs) if spec is None else load_hub(spec, max_pairs)


def describe_nli(df: pd.DataFrame) -> str:
    """Label counts of NLI rows; the row count of pairs or triplets."""
    if "label" not in df.columns:
        return json.dumps({kind_of(df.columns): len(df)})
    counts = df["label"].value_counts().sort_index()
    return json.dumps({NLI_LABELS[int(k)]: int(v) for k, v in counts.items()})
