"""The champion's record: ``artifacts/champion/<slot>.json``, the best model so far in a data folder.

Reading it and its lock live here, under everything (gc keeps what it names, the report shows it, the flow
mines with it); deciding who becomes champion is ``tasks/promotion.py``.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
from collections.abc import Iterator
from pathlib import Path

from tasks.store.artifacts import artifacts_root


def champion_file(data_dir: str | Path, slot: str) -> Path:
    return artifacts_root(data_dir) / "champion" / f"{slot}.json"


def read_champion(data_dir: str | Path, slot: str = "champion") -> dict | None:
    try:
        return json.loads(champion_file(data_dir, slot).read_text())
    except (OSError, ValueError):
        return None


@contextlib.contextmanager
def champion_lock(data_dir: str | Path, slot: str) -> Iterator[None]:
    """Held (blocking) from reading the champion to writing it: a run that finishes while another compares
    waits, then compares with whatever that one left as champion."""
    path = champion_file(data_dir, slot).with_suffix(".lock")
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        yield  # closing the file releases the lock, also when the comparison raises
