"""Run leases: what a live run has produced, reused or will read stays, whatever its age, until the run ends.

A run holds a lease for its whole duration: ``artifacts/runs/live/<host>-<pid>-<hex>.lease``, flocked by the
run's process (a dead process lets go, and gc removes the file), one JSON line per artifact the run asks for:
its stage and key, its parents, the miner whose embedding store it reads and the models it names by location.
``materialize`` writes that line before it looks for the artifact, so a run never holds an artifact its lease
does not name. Lines go in under a shared flock on ``live/gc.lock``; gc holds that lock exclusively while it
reads the leases again and moves away what it removes, so a line goes in either before gc looks (gc keeps
the artifact) or after its folder has gone (the run builds it again): there is no window in between.

Prefect runs a flow's tasks in its thread or in threads that copy its context, so the active lease is a
context variable; a thread started without that context uses every lease its process holds on the data folder.
A nested flow (compare-losses' cells) joins the lease of the flow around it. A call to ``materialize``
outside any run (a CLI command, a test) holds a lease of its own for the call.

On a URL store the lease is also an object of the store (the same name under ``artifacts/runs/live/``),
uploaded at each line and again every ttl/3 while the run lives, and deleted when it ends: gc on the store
keeps what a lease renewed within its window names, whichever machine holds it.
"""

from __future__ import annotations

import contextlib
import contextvars
import datetime as dt
import fcntl
import functools
import hashlib
import inspect
import json
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any

from tasks.store import remote, transfer
from tasks.store.locks import lock_held, release_lock, try_lock

SUFFIX = ".lease"
GC_LOCK = "gc.lock"
STALE_TMP_SECONDS = 3600.0  # a lease file still unnamed this long was left by a process killed while opening it


def live_folder(root: Path) -> Path:
    """Where leases lie, for the artifacts folder ``root``: beside the run records, in no stage's folder."""
    return root / "runs" / "live"


@contextlib.contextmanager
def gc_lock(root: Path, exclusive: bool) -> Iterator[None]:
    """Shared: a run adding to its lease; exclusive: gc between reading the leases and moving what it removes."""
    folder = live_folder(root)
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / GC_LOCK, "a") as handle:  # never unlinked: every process locks the same file
        fcntl.flock(handle, fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH)
        yield


def model_locations(*named: dict[str, Any]) -> list[str]:
    """Locations of the models named in params or facts (a ResolvedModel as a dict): some are artifacts' folders."""
    return sorted(
        {v["location"] for d in named for v in d.values() if isinstance(v, dict) and isinstance(v.get("location"), str)}
    )


def entry(stage: str, key: str, parents: list[dict[str, Any]], params: dict, facts: dict | None) -> dict[str, Any]:
    """What a lease line holds for one artifact: itself, its parents, its miner's store and the models it reads."""
    miner = params.get("miner")
    return {
        "stage": stage,
        "key": key,
        "parents": parents,
        "miner": miner if isinstance(miner, str) else None,
        "models": model_locations(params, facts or {}),
    }


class Lease:
    """One run's lease on an artifacts folder. Its file is made at its first line, so a run that fails its
    checks before any stage leaves nothing behind."""

    def __init__(self, root: Path) -> None:
        self.root = root.resolve()
        self.path: Path | None = None
        self.closed = False
        self._handle: IO | None = None
        self._guard = threading.Lock()  # tasks of one run add from several threads
        self._beat: threading.Event | None = None  # set to stop the renewals of a URL store's lease
        self._beater: threading.Thread | None = None
        self._upload = threading.Lock()  # a beat's upload and a new line's never cross

    def add(self, item: dict[str, Any]) -> bool:
        """Append one line (False when the lease has ended: the caller then needs a lease of its own)."""
        line = json.dumps(item, sort_keys=True, default=str) + "\n"
        with self._guard:
            if self.closed:
                return False
            with gc_lock(self.root, exclusive=False):
                if self._handle is None:
                    self._handle, self.path = _create(self.root)
                self._handle.write(line)
                self._handle.flush()  # in the file before the shared lock goes: gc reads it under the exclusive one
            self._share()
        return True

    def _share(self) -> None:
        """On a URL store: the lease uploaded now, and again every ttl/3 until it ends (call under the guard)."""
        if self.path is None or remote.store_for(self.path) is None:
            return
        with self._upload:
            transfer.push_files([self.path])
        if self._beat is None:
            from tasks.store.object_locks import lease_ttl

            self._beat = threading.Event()
            beat, path, every = self._beat, self.path, lease_ttl() / 3
            self._beater = threading.Thread(target=transfer.keep_uploaded, args=(beat, path, every, self._upload),
                                            name=f"lease {path.name}", daemon=True)  # fmt: skip
            self._beater.start()

    def close(self) -> None:
        with self._guard:
            self.closed = True
            if self._beat is not None and self.path is not None:
                self._beat.set()
                if self._beater is not None:
                    self._beater.join()  # an upload under way lands before the delete, never after it
                with contextlib.suppress(Exception):  # a store gone away: its gc sees the lease go stale
                    transfer.delete_file(self.path)
            if self._handle is not None and self.path is not None:
                release_lock(self._handle, self.path)  # unlinks the file, then lets go
                self._handle = None


def _create(root: Path) -> tuple[IO, Path]:
    """A new lease file, locked before it takes its name: gc never sees it unheld, so never removes it as dead."""
    folder = live_folder(root)
    name = f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    tmp = folder / f".tmp-{name}"
    handle = open(tmp, "a+")
    fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)  # a fresh file: no one else can hold it
    since = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
    handle.write(json.dumps({"holder": {"pid": os.getpid(), "host": socket.gethostname(), "since": since}}) + "\n")
    handle.flush()
    path = folder / f"{name}{SUFFIX}"
    os.rename(tmp, path)
    return handle, path


_current: contextvars.ContextVar[Lease | None] = contextvars.ContextVar("run_lease", default=None)
_open: list[Lease] = []  # every lease this process holds now, for threads started without the run's context
_open_guard = threading.Lock()


def _forget_inherited() -> None:
    """A forked child holds none of its parent's leases (they end with the parent, not with it): its own calls
    open their own."""
    global _open_guard
    _open_guard = threading.Lock()  # another thread of the parent may have held it at the fork
    _open.clear()
    _current.set(None)


os.register_at_fork(after_in_child=_forget_inherited)


def active(root: Path) -> list[Lease]:
    """The leases a caller adds to: its context's, else every one its process holds on ``root``."""
    root = root.resolve()
    mine = _current.get()
    if mine is not None and not mine.closed and mine.root == root:
        return [mine]
    with _open_guard:
        return [lease for lease in _open if lease.root == root and not lease.closed]


@contextlib.contextmanager
def held(data_dir: str | Path) -> Iterator[Lease]:
    """Hold a lease on ``data_dir`` for the block (a nested run joins the one around it); it ends with the block,
    whether the block succeeds or fails."""
    from tasks.store.artifacts import artifacts_root  # artifacts imports this module

    with _held(artifacts_root(data_dir).resolve()) as lease:
        yield lease


@contextlib.contextmanager
def _held(root: Path) -> Iterator[Lease]:
    outer = _current.get()
    if outer is not None and not outer.closed and outer.root == root:
        yield outer
        return
    lease = Lease(root)
    token = _current.set(lease)
    with _open_guard:
        _open.append(lease)
    try:
        yield lease
    finally:
        with _open_guard:
            _open.remove(lease)
        try:
            _current.reset(token)
        except ValueError:  # left in another context than it was entered in
            _current.set(outer)
        lease.close()


@contextlib.contextmanager
def holding(root: Path, item: dict[str, Any]) -> Iterator[None]:
    """``item`` named in the caller's leases for the block; outside any run, in a lease of its own for the block."""
    if any([lease.add(item) for lease in active(root)]):
        yield
        return
    with _held(root.resolve()) as lease:
        lease.add(item)
        yield


def leased(decorator: Callable[[Callable], Any]) -> Callable[[Callable], Any]:
    """``decorator`` (the flow's ``@flow(...)``) around the function, which runs holding a lease on its
    ``data_dir`` argument from its first line to its return or raise."""

    def wrap(fn: Callable) -> Any:
        signature = inspect.signature(fn)

        @functools.wraps(fn)  # Prefect reads the parameters through __wrapped__
        def run(*args: Any, **kwargs: Any) -> Any:
            bound = signature.bind(*args, **kwargs)
            bound.apply_defaults()
            with held(bound.arguments["data_dir"]):
                return fn(*args, **kwargs)

        made = decorator(run)
        if getattr(made, "version", None) == _file_version(run):  # Prefect's default, a hash of this file
            made.version = _file_version(fn)  # rather of the flow's own file, as without the wrapper
        return made

    return wrap


def _file_version(fn: Callable) -> str | None:
    """Prefect's default flow version: the md5 of the file the function is defined in."""
    try:
        return hashlib.md5(Path(inspect.getsourcefile(fn) or "").read_bytes(), usedforsecurity=False).hexdigest()
    except (OSError, TypeError):
        return None


def _lines(path: Path) -> list[dict[str, Any]]:
    """A lease's artifact lines; a line still being written is skipped (its artifact is not looked for yet)."""
    try:
        text = path.read_text()
    except (FileNotFoundError, UnicodeDecodeError):
        return []
    items = []
    for line in text.splitlines():
        with contextlib.suppress(ValueError):
            item = json.loads(line)
            if isinstance(item, dict) and "holder" not in item:
                items.append(item)
    return items


def held_entries(root: Path) -> list[dict[str, Any]]:
    """The lines of every lease a live process holds on ``root``; a dead holder's lease is ignored."""
    paths = sorted(live_folder(root).glob(f"*{SUFFIX}"))
    return [item for path in paths if lock_held(path) for item in _lines(path)]


def dead_leases(root: Path) -> list[Path]:
    """Lease files no process holds (their run died), and unnamed ones a killed process left."""
    folder = live_folder(root)
    dead = [path for path in sorted(folder.glob(f"*{SUFFIX}")) if not lock_held(path)]
    now = time.time()
    for path in sorted(folder.glob(".tmp-*")):
        with contextlib.suppress(FileNotFoundError):
            if now - path.stat().st_mtime > STALE_TMP_SECONDS and not lock_held(path):
                dead.append(path)
    return dead


def remove_dead(path: Path) -> bool:
    """Remove a lease file if no process holds it, looking under its own lock (a live holder keeps it)."""
    handle = try_lock(path, create=False)
    if handle is None:
        return False
    release_lock(handle, path)
    return True
