"""Locks that hold across machines sharing only the store URL: a lease object taken with a conditional write.

The pattern of Terraform's S3 backend lockfile. A lease is taken with ``If-None-Match: *`` (only one writer
creates it), renewed every ttl/3 with ``If-Match`` on its ETag (each renewal changes its body, so its ETag),
and released with a conditional delete. A waiter takes over only when the lease's ETag has not changed for
a whole ttl, measured on its own clock (no two machines' clocks are compared), and logs who held it: a
killed holder is taken over within about one ttl. A holder whose renewal finds another ETag has lost the
lease, and so does one not renewed for 2/3 of a ttl (the store away): before publishing, such a build waits to
take the lease again, and adopts the copy the taker published, if any, rather than mixing its files with
it (a GPU training is not bit-reproducible, so two builds of one key may differ).

``TRAIN_EMBEDDINGS_LEASE_TTL`` sets the ttl in seconds (default 60).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import logging
import os
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from tasks.store.conditional import delete_if, put_if, read_tagged
from tasks.store.locks import lock_path
from tasks.store.remote import Conflict, Store, store_for

log = logging.getLogger(__name__)

TTL_ENV = "TRAIN_EMBEDDINGS_LEASE_TTL"
DEFAULT_TTL = 60.0


def lease_ttl() -> float:
    try:
        ttl = float(os.environ.get(TTL_ENV) or DEFAULT_TTL)
    except ValueError:
        raise ValueError(f"{TTL_ENV}: {os.environ[TTL_ENV]!r} is not a number of seconds") from None
    if not ttl > 0:
        raise ValueError(f"{TTL_ENV}: must be positive, got {ttl}")
    return ttl


def holder_facts(**extra: Any) -> dict[str, Any]:
    """Who holds a lease: for the waiter's log line and the taker's."""
    since = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
    return {"pid": os.getpid(), "host": socket.gethostname(), "since": since, **extra}


def describe(body: bytes | None) -> str:
    try:
        facts = json.loads(body or b"{}")
    except ValueError:
        return "an unreadable lease"
    return f"pid {facts.get('pid')} on {facts.get('host')} since {facts.get('since')}"


class ObjectLease:
    """One lease object in a store, held by this process from ``acquire`` to ``release``."""

    def __init__(self, store: Store, path: str, holder: dict[str, Any], ttl: float | None = None) -> None:
        self.store, self.path, self.holder = store, path, holder
        self.ttl = lease_ttl() if ttl is None else ttl
        self.etag: str | None = None
        self.lost = threading.Event()
        self._stop = threading.Event()
        self._renewals = 0
        self._thread: threading.Thread | None = None
        self.renewed_at = 0.0  # monotonic time of the last write that held: the lease is ours until then + ttl

    def _body(self) -> bytes:
        return json.dumps({**self.holder, "ttl": self.ttl, "renewals": self._renewals}, default=str).encode()

    def try_take(self) -> bool:
        try:
            self.etag = put_if(self.store, self.path, self._body(), None, fs=self.store.quick_fs)
        except Conflict:
            return False
        self.renewed_at = time.monotonic()
        return True

    def healthy(self) -> bool:
        """Whether the lease is surely still ours: renewed within 2/3 of a ttl, and never found taken over."""
        return not self.lost.is_set() and time.monotonic() - self.renewed_at < 2 * self.ttl / 3

    def reacquire(self, wait_seconds: float, what: str) -> None:
        """After the lease was lost (or went unrenewed): let it go, and wait to take it again."""
        self.release()
        self.lost.clear()
        self._stop = threading.Event()
        self.acquire(wait_seconds, what)

    def acquire(self, wait_seconds: float, what: str) -> None:
        """Take the lease, waiting while a live holder renews it; TimeoutError after ``wait_seconds``."""
        deadline = time.monotonic() + wait_seconds
        seen: str | None = None
        seen_at = time.monotonic()
        announced = False
        while not self.try_take():
            current = read_tagged(self.store, self.path, fs=self.store.quick_fs)
            if current is None:  # released between our write and our read: try again now
                continue
            body, etag = current
            now = time.monotonic()
            if etag != seen:
                seen, seen_at = etag, now
            elif now - seen_at >= self.ttl and self._take_over(body, etag, what):
                break
            if now >= deadline:
                raise TimeoutError(f"gave up after {wait_seconds:g} s waiting for {describe(body)}, which holds "
                                   f"{what} (lease {self.store.url}: {self.path})")  # fmt: skip
            if not announced:
                log.warning("%s holds %s: waiting for it (lease %s)", describe(body), what, self.path)
                announced = True
            time.sleep(min(self.ttl / 6, 2.0, max(deadline - now, 0.01)))
        self._thread = threading.Thread(target=self._renew, name=f"lease {self.path}", daemon=True)
        self._thread.start()

    def _take_over(self, body: bytes, etag: str, what: str) -> bool:
        """Replace a lease unchanged for a whole ttl (its holder died); False if it moved meanwhile."""
        try:
            self.etag = put_if(self.store, self.path, self._body(), etag, fs=self.store.quick_fs)
        except Conflict:
            return False
        self.renewed_at = time.monotonic()
        log.warning("took over %s from %s: its lease was not renewed for %g s (lease %s)", what, describe(body),
                    self.ttl, self.path)  # fmt: skip
        return True

    def _renew(self) -> None:
        while not self._stop.wait(self.ttl / 3):
            self._renewals += 1
            try:
                self.etag = put_if(self.store, self.path, self._body(), self.etag, fs=self.store.quick_fs)
                self.renewed_at = time.monotonic()
            except Conflict:
                log.error("lost the lease %s: another process took it over (this one was not renewing it for a "
                          "whole ttl)", self.path)  # fmt: skip
                self.lost.set()
                return
            except Exception as exc:  # noqa: BLE001 -- the store is away; keep trying until the ttl runs out
                log.warning("could not renew the lease %s (%s); trying again", self.path, exc)

    def release(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        if self.etag is not None and not self.lost.is_set():
            with contextlib.suppress(Exception):  # a store gone away: the lease runs out by itself in one ttl
                delete_if(self.store, self.path, self.etag, fs=self.store.quick_fs)
        self.etag = None


@contextlib.contextmanager
def holding(store: Store, path: str, what: str, wait_seconds: float, holder: dict[str, Any]) -> Iterator[ObjectLease]:
    """Hold the lease at ``path`` (in ``store``) for the block."""
    lease = ObjectLease(store, path, holder_facts(**holder))
    lease.acquire(wait_seconds, what)
    try:
        yield lease
    finally:
        lease.release()


def build_lease(final: Path, wait_seconds: float, holder: dict[str, Any]) -> contextlib.AbstractContextManager:
    """On a URL store, the key's lease object in the store (where the local lock file lies in the mirror), so
    that one machine builds a key while the others wait; nothing more for a local folder (its flock is enough)."""
    store = store_for(final)
    if store is None:
        return contextlib.nullcontext()
    what = f"the build of {final.parent.name}/{final.name}"
    return holding(store, store.remote(lock_path(final)), what, wait_seconds, holder)
