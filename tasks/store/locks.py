"""Build locks: one per artifact key, so that one run computes a key while others wait for its result.

An flock on ``.partial-<key>.lock`` beside the key's folder: a dead process lets go by itself. The holder
writes who it is (pid, host, start, the folder it builds in, its params and parents) into the file, for
the waiting run's log line and for ``gc``, which never removes what a live build holds or reads.

A build writes in ``artifacts/.staging/<stage>/`` (``.partial-<key>``, ``.tmp-<key>-<hex>``), as do a pull
from a URL store and gc's ``.trash-`` renames: on the artifacts' filesystem, so the rename into place stays
atomic, yet outside the stage's folder, so a glob over ``artifacts/<stage>/*/`` sees finished artifacts only.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

log = logging.getLogger(__name__)

# How long a run waits for another run building the same key before giving up: a training can take a day.
BUILD_WAIT_SECONDS = 24 * 3600.0
LOCK_POLL_SECONDS = 1.0
STAGING = ".staging"  # under artifacts/: what is not (yet, or any more) an artifact


def staging_dir(final: Path) -> Path:
    """Where the key ``final`` (``artifacts/<stage>/<key>``) is built, pulled or trashed: ``.staging/<stage>/``."""
    return final.parent.parent / STAGING / final.parent.name


def in_staging(path: Path) -> bool:
    """Whether ``path`` is an entry of a staging folder (``artifacts/.staging/<stage>/<entry>``)."""
    return path.parent.parent.name == STAGING


def final_of(entry: Path, key: str) -> Path:
    """The folder of the key a staging entry or lock file is for: the entry lies in ``.staging/<stage>/``, or
    beside that folder (a lock; a staging folder left there by a version before ``.staging/``)."""
    return entry.parents[2] / entry.parent.name / key if in_staging(entry) else entry.parent / key


def lock_path(final: Path) -> Path:
    """The key's build lock, beside its folder (the name is older than non-resumable stages taking it)."""
    return final.parent / f".partial-{final.name}.lock"


def staging_key(name: str) -> str | None:
    """The key a staging folder's name (``.partial-<key>``, ``.tmp-<key>-<hex>``) builds, else None."""
    if name.startswith(".partial-") and not name.endswith(".lock"):
        return name.removeprefix(".partial-")
    if name.startswith(".tmp-") and name.count("-") >= 2:
        return name.removeprefix(".tmp-").rsplit("-", 1)[0]
    return None


def _same_file(handle: IO, path: Path) -> bool:
    try:
        mine, now = os.fstat(handle.fileno()), os.stat(path)
    except FileNotFoundError:
        return False
    return (mine.st_dev, mine.st_ino) == (now.st_dev, now.st_ino)


# Not filelock's FileLock: a lock here holds its holder's JSON (pid, host, since) for the run waiting on it to
# name, and the holder unlinks it while still holding it (checked by inode, ``_same_file``), which filelock
# does not do; both are what gc and the messages of a waiting run rely on.
def try_lock(path: Path, create: bool = True) -> IO | None:
    """The lock at ``path`` if no one holds it now, else None (None too when it is absent and not ``create``).

    A holder unlinks the file as it lets go, so a lock taken on a file no longer at ``path`` is
    not the lock: take the one there now instead.
    """
    while True:
        try:
            handle = open(path, "a+" if create else "r")
        except FileNotFoundError:
            return None
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.close()
            return None
        if _same_file(handle, path):
            return handle
        handle.close()


def release_lock(handle: IO, path: Path) -> None:
    """Unlink the lock file while still holding it (waiters then take a fresh one), then let go."""
    with contextlib.suppress(FileNotFoundError):
        if _same_file(handle, path):
            path.unlink()
    handle.close()


def lock_held(path: Path) -> bool:
    """Whether some process holds this lock now; a probe that takes nothing it keeps."""
    handle = try_lock(path, create=False)
    if handle is None:
        return path.exists()
    handle.close()
    return False


def lock_holder(path: Path) -> dict[str, Any]:
    """What the holder wrote into the lock file: pid, host, the folder it builds in, its params and parents."""
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def describe_holder(path: Path, final: Path) -> str:
    """Who holds the key's lock and the folder it builds in, for the log line and the timeout message."""
    holder = lock_holder(path)
    if holder.get("folder"):
        since = f"pid {holder.get('pid')} on {holder.get('host')} since {holder.get('since')}"
        return f"{since}, building in {holder['folder']}"
    folder = staging_dir(final)
    staging = sorted(folder.glob(f".tmp-{final.name}-*")) + [folder / f".partial-{final.name}"]
    return f"a run building in {next((f for f in staging if f.exists()), staging[-1])}"


def wait_for_lock(final: Path, wait_seconds: float) -> IO:
    """Take the key's lock, waiting while another run holds it; TimeoutError after ``wait_seconds``."""
    path = lock_path(final)
    path.parent.mkdir(parents=True, exist_ok=True)
    deadline = time.monotonic() + wait_seconds
    announced = False
    while (handle := try_lock(path)) is None:
        other = describe_holder(path, final)
        if time.monotonic() >= deadline:
            raise TimeoutError(
                f"gave up after {wait_seconds:g} s waiting for another run building the same artifact "
                f"({other}; lock {path}). If that run is stuck, stop it; a dead one lets go by itself."
            )
        if not announced:
            log.warning("another run is building %s (%s): waiting for it (lock %s)", final, other, path)
            announced = True
        time.sleep(min(LOCK_POLL_SECONDS, max(deadline - time.monotonic(), 0.0)))
    return handle


@contextlib.contextmanager
def signed(handle: IO, path: Path, holder: dict[str, Any]) -> Iterator[None]:
    """Hold a taken lock for the block with who holds it written in (for waiters and gc), then let it go."""
    try:
        handle.seek(0)
        handle.truncate()
        handle.write(json.dumps(holder, default=str))
        handle.flush()
        yield
    finally:
        release_lock(handle, path)


@contextlib.contextmanager
def exclusive(final: Path, wait_seconds: float, holder: dict[str, Any]) -> Iterator[None]:
    """Hold the key's build lock for the whole build, with who holds it written in, for waiters and gc."""
    with signed(wait_for_lock(final, wait_seconds), lock_path(final), holder):
        yield
