"""Artifacts: content-addressed folders under ``<data_dir>/artifacts/<stage>/<key>/``.

A key is derived from everything that determines an artifact's content (stage, stage
version, parameters, parents' keys), so the same inputs find the same folder and nothing
is recomputed, while a changed parameter moves every downstream key. Folders are built
under ``artifacts/.staging/<stage>/`` (``locks.py``: out of the stage's folder, so its globs see only
finished artifacts) and renamed into place only when complete, with a manifest that
records parameters, parents, rows, schema, file checksums and timings: a folder without a
valid manifest (``manifests.py``: one that lists every file it holds) is not an artifact, so a crash
never leaves a half-written one, and a damaged manifest is rebuilt, never trusted.

One key, one computation: a build holds the key's lock (``.partial-<key>.lock``, an flock, so a dead
process lets go) from start to publish; another run wanting the same key waits for it and takes its
artifact, and builds only if that run failed. Every artifact asked for is first named in the run's lease
(``leases.py``), so gc keeps it, its parents and its inputs while the run lives.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import errno
import hashlib
import json
import logging
import os
import shutil
import socket
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from tasks.store import environment, leases, object_locks, remote, transfer
from tasks.store.locks import BUILD_WAIT_SECONDS, exclusive, staging_dir
from tasks.store.manifests import MANIFEST, ManifestError, damaged_files, file_entries, load_manifest, schema_of
from tasks.store.manifests import file_sha256 as file_sha256  # re-exported: callers import these from here
from tasks.store.manifests import read_manifest as read_manifest

log = logging.getLogger(__name__)

CODE_VERSION = "0.1.0"


@dataclass(frozen=True)
class ArtifactRef:
    """What tasks pass to each other: small, hashable, and checkable against disk."""

    stage: str
    key: str
    path: str
    rows: int | None = None
    cached: bool = field(default=False, compare=False)

    @property
    def folder(self) -> Path:
        return Path(self.path)


@dataclass(frozen=True)
class Built:
    """What a build wrote: its row count and the facts it learnt on the way (origin, diagnostics, the
    training summary), which go into the manifest beside the parameters."""

    rows: int | None
    facts: dict[str, Any] = field(default_factory=dict)


def artifacts_root(data_dir: str | Path) -> Path:
    """The local artifacts folder: under the data folder, or under the store's mirror for a URL."""
    return remote.local_root(data_dir) / "artifacts"


def artifact_key(stage: str, version: int, params: dict[str, Any], parents: Sequence[ArtifactRef]) -> str:
    """A short stable hash of the stage, its version, its parameters and its parents' keys."""
    payload = json.dumps(
        {"stage": stage, "version": version, "params": params, "parents": [(p.stage, p.key) for p in parents]},
        sort_keys=True,
        default=str,
    )
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


def write_parquet(table: pa.Table | Any, path: Path) -> int:
    """Write a pandas frame or Arrow table as Parquet (zstd); returns the row count."""
    if not isinstance(table, pa.Table):
        table = pa.Table.from_pandas(table, preserve_index=False)
    pq.write_table(table, path, compression="zstd")
    return table.num_rows


def atomic_write_text(path: Path, text: str) -> None:
    """Write beside the target and rename over it: readers see the old or the new file, never half."""
    tmp = path.parent / f".tmp-{path.name}-{uuid.uuid4().hex[:8]}"
    tmp.write_text(text)
    tmp.replace(path)


def find(data_dir: str | Path, stage: str, key: str) -> ArtifactRef | None:
    """The finished artifact for (stage, key), or None if it is missing or damaged (its files, or its manifest).
    On a URL store, one the mirror lacks is pulled from the store, and one the store lost is put back."""
    folder = artifacts_root(data_dir) / stage / key
    found = _find_local(folder, stage, key)
    if remote.store_for(folder) is None:
        return found
    if found is not None:
        if not transfer.has_artifact(folder):  # removed from the store (its gc), or a push that failed
            transfer.push_artifact(folder)
        return found
    return _find_local(folder, stage, key) if transfer.pull_artifact(folder) else None


def _find_local(folder: Path, stage: str, key: str) -> ArtifactRef | None:
    if not folder.exists():
        return None
    try:
        manifest = load_manifest(folder)
    except ManifestError as exc:
        log.warning("%s is not an artifact (%s); recomputing it", folder, exc)
        return None
    if damaged_files(folder, manifest["files"]):
        log.warning("artifact %s is damaged (files missing, truncated or changed); recomputing it", folder)
        return None
    return ArtifactRef(stage, key, str(folder), manifest.get("rows"), cached=True)


@contextlib.contextmanager
def _staging(folder: Path, resumable: bool, final: Path) -> Iterator[Path]:
    """A folder under ``.staging/``, never seen as an artifact; a temporary one is removed on failure, a
    resumable one stays for the next build of the key to resume from (the caller holds the key's lock). A
    ``.partial-<key>`` left beside the key's folder by a version before ``.staging/`` is resumed from too."""
    folder.parent.mkdir(parents=True, exist_ok=True)
    if resumable and not folder.exists() and (final.parent / folder.name).is_dir():
        os.rename(final.parent / folder.name, folder)
    folder.mkdir(exist_ok=resumable)
    try:
        yield folder
    except BaseException:
        if not resumable:
            shutil.rmtree(folder, ignore_errors=True)
        raise


def _reused(ref: ArtifactRef) -> ArtifactRef:
    """Mark a reused artifact as used now: gc's age is time since last use, so a live run's inputs stay."""
    _warn_if_made_elsewhere(ref)
    with contextlib.suppress(OSError):
        os.utime(ref.folder)
    return ref


def materialize(
    data_dir: str | Path,
    stage: str,
    version: int,
    params: dict[str, Any],
    parents: Sequence[ArtifactRef],
    build: Callable[[Path], Built | int | None],
    facts: dict[str, Any] | None = None,
    resumable: bool = False,
    wait_seconds: float | None = None,
) -> ArtifactRef:
    """Return the artifact for these inputs, building it with ``build(folder)`` only if absent.

    ``build`` writes into an empty temporary folder and returns its row count, or a :class:`Built`
    with the facts it learnt; the folder is renamed into place with its manifest only after ``build``
    returns, so readers never see partial output. ``facts`` are known before the build (the models
    it used) and go into the manifest too.
    ``resumable``: a failed build leaves its folder for the next build of the same key to resume.
    ``wait_seconds``: how long to wait for another run building the same key (default
    ``BUILD_WAIT_SECONDS``); its artifact is then returned as cached, or built here if that run failed.
    """
    key = artifact_key(stage, version, params, parents)
    final = artifacts_root(data_dir) / stage / key
    named = [{"stage": p.stage, "key": p.key, "path": p.path} for p in parents]
    with leases.holding(final.parent.parent, leases.entry(stage, key, named, params, facts)):  # before looking
        found = find(data_dir, stage, key)
        if found is not None:
            return _reused(found)
        wait = BUILD_WAIT_SECONDS if wait_seconds is None else wait_seconds
        return _build(final, version, params, named, build, facts, resumable, wait)


def _build(final: Path, version: int, params: dict[str, Any], parents: list[dict[str, Any]],
           build: Callable[[Path], Built | int | None], facts: dict[str, Any] | None, resumable: bool,
           wait_seconds: float) -> ArtifactRef:  # fmt: skip
    """Build under the key's lock, unless the run this one waited for built it; publish it with its manifest."""
    stage, key, data_dir = final.parent.name, final.name, final.parent.parent.parent
    # where it writes: .partial-<key> kept across failures to resume from, else a fresh temporary
    folder = staging_dir(final) / (f".partial-{key}" if resumable else f".tmp-{key}-{uuid.uuid4().hex[:8]}")
    holder = {
        "pid": os.getpid(),
        "host": socket.gethostname(),
        "since": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "folder": str(folder),
        "stage": stage,
        "params": params,
        "parents": parents,
    }
    with exclusive(final, wait_seconds, holder), object_locks.build_lease(final, wait_seconds, holder) as lease:
        found = find(data_dir, stage, key)
        if found is not None:  # the run we waited for built it
            log.info("%s/%s was built by the run this one waited for: reusing it", stage, key)
            return _reused(found)
        started = time.perf_counter()
        with _staging(folder, resumable, final) as tmp:
            built = build(tmp)
            built = built if isinstance(built, Built) else Built(built)
            files = file_entries(tmp)
            if not files:  # a manifest listing nothing would certify anything
                raise ValueError(f"{stage}/{key}: the build wrote no file into {tmp}; an artifact holds at least one")
            manifest = {
                "stage": stage,
                "key": key,
                "version": version,
                "code_version": CODE_VERSION,
                "params": params,
                "parents": parents,
                "rows": built.rows,
                "schema": schema_of(tmp),
                "files": files,
                "created": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
                "seconds": round(time.perf_counter() - started, 3),
                "environment": environment.describe(),
                **(facts or {}),
                **built.facts,
            }
            (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2, default=str))
            ref = _publish(tmp, final, ArtifactRef(stage, key, str(final), built.rows, cached=False))
        adopted = transfer.share(ref.folder, lease, wait_seconds)  # under its lease: a waiter then finds it there
        return replace(ref, cached=True) if adopted else ref


def _warn_if_made_elsewhere(ref: ArtifactRef) -> None:
    """A reused artifact made with other versions of the libraries that decide results: say which."""
    changed = environment.differences((read_manifest(ref.folder) or {}).get("environment"))
    if changed:
        names = ", ".join(f"{name} {was} -> {now}" for name, (was, now) in changed.items())
        log.warning("%s/%s is reused, but was made with other library versions (%s)", ref.stage, ref.key, names)


def _publish(tmp: Path, final: Path, ref: ArtifactRef) -> ArtifactRef:
    """Rename the finished folder into place; if a concurrent run of this machine got there first, keep theirs."""
    theirs = _find_local(final, ref.stage, ref.key)
    if theirs is not None:  # same key, same inputs: identical content, and readers may hold it
        shutil.rmtree(tmp, ignore_errors=True)
        return theirs
    if final.exists():  # a damaged copy: move it aside atomically before ours goes in
        trash = tmp.parent / f".trash-{final.name}-{uuid.uuid4().hex[:8]}"
        os.rename(final, trash)
        shutil.rmtree(trash, ignore_errors=True)
    try:
        os.rename(tmp, final)
    except OSError as exc:  # lost a race with a concurrent writer between the check and the rename
        if exc.errno == errno.EXDEV:  # a stage's folder linked to another disk than .staging/: keep the build
            raise OSError(exc.errno, f"{tmp} cannot be renamed into {final}: not on one filesystem") from exc
        shutil.rmtree(tmp, ignore_errors=True)
        return _find_local(final, ref.stage, ref.key) or ref
    return ref


def verify(ref: ArtifactRef) -> list[str]:
    """Files whose checksum no longer matches the manifest (empty when intact); the manifest itself when it
    is not an artifact's (it would certify anything)."""
    try:
        return damaged_files(ref.folder, load_manifest(ref.folder)["files"])
    except ManifestError:
        return [MANIFEST]


def list_artifacts(data_dir: str | Path) -> list[dict[str, Any]]:
    """One row per artifact folder, for the inspect command; one whose manifest is not an artifact's is listed
    by its folder's name, with a warning naming it (``verify`` then reports its manifest)."""
    rows = []
    for manifest_path in sorted(artifacts_root(data_dir).glob(f"*/*/{MANIFEST}")):
        folder = manifest_path.parent
        try:
            manifest = load_manifest(folder)
        except ManifestError as exc:
            log.warning("%s is not an artifact (%s); the next run rebuilds it", folder, exc)
            manifest = {"stage": folder.parent.name, "key": folder.name, "parents": []}
        rows.append(
            {
                "stage": manifest["stage"],
                "key": manifest["key"],
                "rows": manifest.get("rows"),
                "bytes": sum(p.stat().st_size for p in folder.rglob("*") if p.is_file()),
                "created": manifest.get("created"),
                "parents": ",".join(f"{p['stage']}/{p['key']}" for p in manifest["parents"]),
                "path": str(folder),
            }
        )
    return rows
