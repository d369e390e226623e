"""The champion's record: ``artifacts/champion/<slot>.json``, the best model so far in a data folder.

The record is never guessed. It is written with a checksum of its own content, and the record it replaces
is kept beside it (``<slot>.json.prev``). A record that exists but does not parse, lacks what a record
holds, or fails its checksum is damaged: reading it raises ``ChampionDamaged``, naming the file and how to
repair it, so a run stops before it trains (rather than promoting any challenger over "no champion") and gc
refuses to run (rather than listing the real champion's model for removal). ``restore`` brings the
previous record back (``train-embeddings champion --restore``).

On a URL store the record is an object of the store, and the read-compare-write is a compare-and-swap:
``read_champion`` notes the ETag it read, ``write_champion`` writes only if the record still has it
(``If-Match``; ``If-None-Match: *`` when there was none) and raises ``ChampionChanged`` otherwise, and
the promotion compares again with the new champion. Two machines promoting at once: one wins, the other
compares with the winner.

Reading, writing and its lock live here, under everything; deciding who becomes champion is
``tasks/promotion.py``.
"""

from __future__ import annotations

import contextlib
import contextvars
import fcntl
import hashlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from tasks.store import conditional, remote, transfer
from tasks.store.artifacts import artifacts_root, atomic_write_text

CHECKSUM = "sha256"  # of the record's other fields, as canonical JSON
REQUIRED = ("model_key", "model_path", "metric", "score")
PREVIOUS_SUFFIX = ".prev"


class ChampionDamaged(ValueError):
    """A champion record that exists but cannot be trusted; the message says which file and how to repair it."""


class ChampionChanged(RuntimeError):
    """Another machine wrote the champion record since this run read it: compare again."""


# The ETag each record of a URL store had when this context read it: what its write must still find.
_read_tags: contextvars.ContextVar[dict[str, str | None] | None] = contextvars.ContextVar("champion_tags", default=None)


def _fetch(path: Path) -> str | None:
    """The record's text (None: no record). On a URL store from the store, noting its ETag for the write, and
    kept in the mirror too (for whatever reads it there)."""
    store = remote.store_for(path)
    if store is None:
        return path.read_text()
    tagged = conditional.read_tagged(store, store.remote(path))
    tags = _read_tags.get()
    if tags is not None:
        tags[str(path)] = None if tagged is None else tagged[1]
    if tagged is None:
        path.unlink(missing_ok=True)
        return None
    text = tagged[0].decode("utf-8")
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, text)
    return text


def _store_write(path: Path, text: str) -> None:
    """On a URL store, write the record only if it still is what this context read (ChampionChanged if not)."""
    store = remote.store_for(path)
    if store is None:
        return
    tags = _read_tags.get() or {}
    if str(path) not in tags:  # written without a read (a restore): against what is there now
        current = conditional.read_tagged(store, store.remote(path))
        tags[str(path)] = None if current is None else current[1]
    try:
        tags[str(path)] = conditional.put_if(store, store.remote(path), text.encode(), tags[str(path)])
    except remote.Conflict:
        raise ChampionChanged(
            f"{store.remote(path)}: another run changed the champion since this one read it"
        ) from None


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
        text = _fetch(path)
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError) as exc:
        raise _damaged(path, f"unreadable ({type(exc).__name__}: {exc})", data_dir, slot) from None
    if text is None:
        return None
    try:
        record = parse_record(text)
    except ValueError as exc:
        raise _damaged(path, str(exc), data_dir, slot) from None
    return record if remote.store_for(path) is None else _localized(record, path, slot)


def _localized(record: dict[str, Any], path: Path, slot: str) -> dict[str, Any]:
    """A URL store's record as this machine reads it: its model and per-pair file where the mirror keeps them
    (the record names them by their store URLs; the model is pulled by whoever loads it, the pairs now)."""
    root = path.parent.parent
    record = dict(record)
    record["model_path"] = str(root / "models" / record["model_key"] / "model")
    for name in ("pairs", "queries"):  # STS-B's per-pair file, the held-out split's per-query file
        if isinstance(record.get(name), str):
            local = path.parent / f"{slot}-pairs" / record[name].rsplit("/", 1)[-1]
            transfer.pull_folder(local.parent, local.name)
            record[name] = str(local)
    return record


def slots(data_dir: str | Path) -> list[str]:
    """Every champion slot of a data folder (``champion``, and others such as a per-metric slot)."""
    transfer.pull_folder(artifacts_root(data_dir) / "champion", "*.json", mutable=True)
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
    written = {k: v for k, v in record.items() if k != CHECKSUM}
    written[CHECKSUM] = _checksum(written)
    text = json.dumps(written, indent=2, default=str)
    current = _current_text(path)
    if current is not None:
        parse_record(current)  # never keep a damaged record as the one to restore
    _store_write(path, text)  # the commit point on a URL store: a compare-and-swap (a loser writes nothing)
    if current is not None:
        atomic_write_text(previous_file(data_dir, slot), current)
        transfer.push_files([previous_file(data_dir, slot)])
    atomic_write_text(path, text)
    return written


def _current_text(path: Path) -> str | None:
    """The record this context read (the mirror holds it as read), else what is there now."""
    tags = _read_tags.get()
    if remote.store_for(path) is not None and (tags is None or str(path) not in tags):
        return _fetch(path)
    return path.read_text() if path.is_file() else None


def restore_champion(data_dir: str | Path, slot: str = "champion") -> dict[str, Any]:
    """Put the previous record back in place of the current one (damaged or not); raises ValueError when
    there is no sound previous record."""
    previous = previous_file(data_dir, slot)
    transfer.pull_folder(previous.parent, previous.name, mutable=True)
    try:
        text = previous.read_text()
    except FileNotFoundError:
        raise ValueError(f"{previous}: no previous champion record to restore") from None
    try:
        record = parse_record(text)
    except ValueError as exc:
        raise ValueError(f"{previous}: the previous record is damaged too: {exc}") from None
    with champion_lock(data_dir, slot):
        _store_write(champion_file(data_dir, slot), text)
        atomic_write_text(champion_file(data_dir, slot), text)
    return record


@contextlib.contextmanager
def champion_lock(data_dir: str | Path, slot: str) -> Iterator[None]:
    """Held (blocking) from reading the champion to writing it: a run that finishes while another compares
    waits, then compares with whatever that one left as champion."""
    path = champion_file(data_dir, slot).with_suffix(".lock")
    path.parent.mkdir(parents=True, exist_ok=True)
    token = _read_tags.set({})  # across machines: what the block reads, its write must still find
    try:
        with open(path, "a") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            yield  # closing the file releases the lock, also when the comparison raises
    finally:
        _read_tags.reset(token)
