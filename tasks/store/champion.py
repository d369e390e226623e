"""The champion's record: ``artifacts/champion/<slot>.json``, the best model so far in a data folder.

The record is never guessed. It is written with a checksum of its own content, and the record it replaces
is kept beside it (``<slot>.json.prev``). A record that exists but does not parse, lacks what a record
holds, or fails its checksum is damaged: reading it raises ``ChampionDamaged``, naming the file and how to
repair it, so a run stops before it trains (rather than promoting any challenger over "no champion") and gc
refuses to run (rather than listing the real champion's model for removal). ``restore`` brings the
previous record back (``train-embeddings champion --restore``).

Reading, writing and its lock live here, under everything; deciding who becomes champion is
``tasks/promotion.py``.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from tasks.store.artifacts import artifacts_root, atomic_write_text

CHECKSUM = "sha256"  # of the record's other fields, as canonical JSON
REQUIRED = ("model_key", "model_path", "metric", "score")
PREVIOUS_SUFFIX = ".prev"


class ChampionDamaged(ValueError):
    """A champion record that exists but cannot be trusted; the message says which file and how to repair it."""


def champion_file(data_dir: str | Path, slot: str) -> Path:
    return artifacts_root(data_dir) / "champion" / f"{slot}.json"


def previous_file(data_dir: str | Path, slot: str) -> Path:
    path = champion_file(data_dir, slot)
    return path.with_name(path.name + PREVIOUS_SUFFIX)


def _checksum(record: dict[str, Any]) -> str:
    fields = {k: v for k, v in record.items() if k != CHECKSUM}
    return hashlib.sha256(json.dumps(fields, sort_keys=True, default=str).encode()).hexdigest()


def parse_record(text: str) -> dict[str, Any]:
    """A record from its file's text; raises ValueError saying what is wrong with it. A record without a
    checksum (written before records had one) is taken when it holds every required field."""
    try:
        record = json.loads(text)
    except ValueError as exc:
        raise ValueError(f"not JSON ({exc})") from None
    if not isinstance(record, dict):
        raise ValueError(f"not a JSON object but {type(record).__name__}")
    missing = [k for k in REQUIRED if k not in record]
    if missing:
        raise ValueError(f"it lacks {missing}")
    if CHECKSUM in record and record[CHECKSUM] != _checksum(record):
        raise ValueError("its checksum does not match its content")
    return record


def _damaged(path: Path, why: str, data_dir: str | Path, slot: str) -> ChampionDamaged:
    previous = previous_file(data_dir, slot)
    restore = (
        f"restore the previous record ({previous}) with `train-embeddings champion --restore --data-dir {data_dir}"
        f"{'' if slot == 'champion' else f' --slot {slot}'}`, or "
        if previous.is_file()
        else ""
    )
    return ChampionDamaged(
        f"{path}: the champion record is damaged: {why}. Nothing was compared or removed; {restore}delete {path} "
        "to start with no champion (every model then stays in the store)"
    )


def read_champion(data_dir: str | Path, slot: str = "champion") -> dict | None:
    """The current champion's record, None when there is none yet; raises ChampionDamaged when damaged."""
    path = champion_file(data_dir, slot)
    try:
        text = path.read_text()
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError) as exc:
        raise _damaged(path, f"unreadable ({type(exc).__name__}: {exc})", data_dir, slot) from None
    try:
        return parse_record(text)
    except ValueError as exc:
        raise _damaged(path, str(exc), data_dir, slot) from None


def slots(data_dir: str | Path) -> list[str]:
    """Every champion slot of a data folder (``champion``, and others such as a per-metric slot)."""
    return sorted(p.stem for p in (artifacts_root(data_dir) / "champion").glob("*.json"))


def check_champions(data_dir: str | Path) -> None:
    """Raise ChampionDamaged if any slot's record is damaged: what a run and gc check before anything else."""
    for slot in slots(data_dir):
        read_champion(data_dir, slot)


def write_champion(data_dir: str | Path, slot: str, record: dict[str, Any]) -> dict[str, Any]:
    """Write a new record with its checksum, atomically, keeping the record it replaces (when sound) as
    ``<slot>.json.prev``. Call under ``champion_lock``. Returns the record as written."""
    path = champion_file(data_dir, slot)
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.is_file():
        current = path.read_text()
        parse_record(current)  # never keep a damaged record as the one to restore
        atomic_write_text(previous_file(data_dir, slot), current)
    written = {k: v for k, v in record.items() if k != CHECKSUM}
    written[CHECKSUM] = _checksum(written)
    atomic_write_text(path, json.dumps(written, indent=2, default=str))
    return written


def restore_champion(data_dir: str | Path, slot: str = "champion") -> dict[str, Any]:
    """Put the previous record back in place of the current one (damaged or not); raises ValueError when
    there is no sound previous record."""
    previous = previous_file(data_dir, slot)
    try:
        text = previous.read_text()
    except FileNotFoundError:
        raise ValueError(f"{previous}: no previous champion record to restore") from None
    try:
        record = parse_record(text)
    except ValueError as exc:
        raise ValueError(f"{previous}: the previous record is damaged too: {exc}") from None
    with champion_lock(data_dir, slot):
        atomic_write_text(champion_file(data_dir, slot), text)
    return record


@contextlib.contextmanager
def champion_lock(data_dir: str | Path, slot: str) -> Iterator[None]:
    """Held (blocking) from reading the champion to writing it: a run that finishes while another compares
    waits, then compares with whatever that one left as champion."""
    path = champion_file(data_dir, slot).with_suffix(".lock")
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        yield  # closing the file releases the lock, also when the comparison raises
