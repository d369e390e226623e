"""Artifacts: content-addressed folders under ``<data_dir>/artifacts/<stage>/<key>/``.

A key is derived from everything that determines an artifact's content (stage, stage
version, parameters, parents' keys), so the same inputs find the same folder and nothing
is recomputed, while a changed parameter moves every downstream key. Folders are built
under a temporary name and renamed into place only when complete, with a manifest that
records parameters, parents, rows, schema, file checksums and timings: a folder without a
valid manifest is simply not an artifact, so a crash never leaves a half-written one.

One key, one computation: a build holds the key's lock (``.partial-<key>.lock``, an flock, so a dead
process lets go) from start to publish; another run wanting the same key waits for it and takes its
artifact, and builds only if that run failed.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import json
import logging
import os
import shutil
import socket
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from tasks.store import environment
from tasks.store.locks import BUILD_WAIT_SECONDS, exclusive

log = logging.getLogger(__name__)

MANIFEST = "manifest.json"
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
    return Path(data_dir) / "artifacts"


def artifact_key(stage: str, version: int, params: dict[str, Any], parents: Sequence[ArtifactRef]) -> str:
    """A short stable hash of the stage, its version, its parameters and its parents' keys."""
    payload = json.dumps(
        {"stage": stage, "version": version, "params": params, "parents": [(p.stage, p.key) for p in parents]},
        sort_keys=True,
        default=str,
    )
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def write_parquet(table: pa.Table | Any, path: Path) -> int:
    """Write a pandas frame or Arrow table as Parquet (zstd); returns the row count."""
    if not isinstance(table, pa.Table):
        table = pa.Table.from_pandas(table, preserve_index=False)
    pq.write_table(table, path, compression="zstd")
    return table.num_rows


def read_manifest(folder: Path) -> dict[str, Any] | None:
    try:
        return json.loads((folder / MANIFEST).read_text())
    except (OSError, ValueError):
        return None


def _damaged_files(folder: Path, manifest: dict[str, Any]) -> list[str]:
    """Files the manifest lists that are missing or differ in size or checksum."""
    return [
        rel
        for rel, info in manifest.get("files", {}).items()
        if not (folder / rel).is_file()
        or (folder / rel).stat().st_size != info["bytes"]
        or file_sha256(folder / rel) != info["sha256"]
    ]


def atomic_write_text(path: Path, text: str) -> None:
    """Write beside the target and rename over it: readers see the old or the new file, never half."""
    tmp = path.parent / f".tmp-{path.name}-{uuid.uuid4().hex[:8]}"
    tmp.write_text(text)
    tmp.replace(path)


def find(data_dir: str | Path, stage: str, key: str) -> ArtifactRef | None:
    """The finished artifact for (stage, key), or None if it is missing or damaged."""
    folder = artifacts_root(data_dir) / stage / key
    manifest = read_manifest(folder)
    if manifest is None:
        return None
    if _damaged_files(folder, manifest):
        log.warning("artifact %s is damaged (files missing, truncated or changed); recomputing it", folder)
        return None
    return ArtifactRef(stage, key, str(folder), manifest.get("rows"), cached=True)


def _schema_of(folder: Path) -> dict[str, dict[str, str]]:
    return {
        str(p.relative_to(folder)): {f.name: str(f.type) for f in pq.read_schema(p)}
        for p in sorted(folder.rglob("*.parquet"))
    }


def _checksums(folder: Path) -> dict[str, dict[str, Any]]:
    return {
        str(p.relative_to(folder)): {"bytes": p.stat().st_size, "sha256": file_sha256(p)}
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def _staging_folder(final: Path, resumable: bool) -> Path:
    """Where a build writes: ``.partial-<key>`` kept across failures to resume from, else a fresh temporary."""
    if resumable:
        return final.parent / f".partial-{final.name}"
    return final.parent / f".tmp-{final.name}-{uuid.uuid4().hex[:8]}"


@contextlib.contextmanager
def _staging(folder: Path, resumable: bool) -> Iterator[Path]:
    """A hidden sibling folder, never seen as an artifact; a temporary one is removed on failure,
    a resumable one stays for the next build of the key to resume from (the caller holds the key's lock)."""
    folder.mkdir(parents=True, exist_ok=resumable)
    try:
        yield folder
    except BaseException:
        if not resumable:
            shutil.rmtree(folder, ignore_errors=True)
        raise


def _touch(folder: Path) -> None:
    """Mark a reused artifact as used now: gc's age is time since last use, so a live run's inputs stay."""
    with contextlib.suppress(OSError):
        os.utime(folder)


def _reused(ref: ArtifactRef) -> ArtifactRef:
    _warn_if_made_elsewhere(ref)
    _touch(ref.folder)
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
    found = find(data_dir, stage, key)
    if found is not None:
        return _reused(found)
    final = artifacts_root(data_dir) / stage / key
    folder = _staging_folder(final, resumable)
    holder = {
        "pid": os.getpid(),
        "host": socket.gethostname(),
        "since": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "folder": str(folder),
        "stage": stage,
        "params": params,
        "parents": [{"stage": p.stage, "key": p.key, "path": p.path} for p in parents],
    }
    with exclusive(final, BUILD_WAIT_SECONDS if wait_seconds is None else wait_seconds, holder):
        found = find(data_dir, stage, key)
        if found is not None:  # the run we waited for built it
            log.info("%s/%s was built by the run this one waited for: reusing it", stage, key)
            return _reused(found)
        started = time.perf_counter()
        with _staging(folder, resumable) as tmp:
            built = build(tmp)
            built = built if isinstance(built, Built) else Built(built)
            manifest = {
                "stage": stage,
                "key": key,
                "version": version,
                "code_version": CODE_VERSION,
                "params": params,
                "parents": holder["parents"],
                "rows": built.rows,
                "schema": _schema_of(tmp),
                "files": _checksums(tmp),
                "created": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
                "seconds": round(time.perf_counter() - started, 3),
                "environment": environment.describe(),
                **(facts or {}),
                **built.facts,
            }
            (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2, default=str))
            return _publish(tmp, final, ArtifactRef(stage, key, str(final), built.rows, cached=False))


def _warn_if_made_elsewhere(ref: ArtifactRef) -> None:
    """A reused artifact made with other versions of the libraries that decide results: say which."""
    changed = environment.differences((read_manifest(ref.folder) or {}).get("environment"))
    if changed:
        names = ", ".join(f"{name} {was} -> {now}" for name, (was, now) in changed.items())
        log.warning("%s/%s is reused, but was made with other library versions (%s)", ref.stage, ref.key, names)


def _publish(tmp: Path, final: Path, ref: ArtifactRef) -> ArtifactRef:
    """Rename the finished folder into place; if a concurrent run got there first, keep theirs."""
    theirs = find(final.parent.parent.parent, ref.stage, ref.key)
    if theirs is not None:  # same key, same inputs: identical content, and readers may hold it
        shutil.rmtree(tmp, ignore_errors=True)
        return theirs
    if final.exists():  # a damaged copy: move it aside atomically before ours goes in
        trash = final.parent / f".trash-{final.name}-{uuid.uuid4().hex[:8]}"
        os.rename(final, trash)
        shutil.rmtree(trash, ignore_errors=True)
    try:
        os.rename(tmp, final)
    except OSError:  # lost a race with a concurrent writer between the check and the rename
        shutil.rmtree(tmp, ignore_errors=True)
        return find(final.parent.parent.parent, ref.stage, ref.key) or ref
    return ref


def verify(ref: ArtifactRef) -> list[str]:
    """Files whose checksum no longer matches the manifest (empty when intact)."""
    return _damaged_files(ref.folder, read_manifest(ref.folder) or {})


def list_artifacts(data_dir: str | Path) -> list[dict[str, Any]]:
    """One row per finished artifact, for the inspect command."""
    rows = []
    for manifest_path in sorted(artifacts_root(data_dir).glob(f"*/*/{MANIFEST}")):
        manifest = read_manifest(manifest_path.parent) or {}
        size = sum(p.stat().st_size for p in manifest_path.parent.rglob("*") if p.is_file())
        rows.append(
            {
                "stage": manifest.get("stage"),
                "key": manifest.get("key"),
                "rows": manifest.get("rows"),
                "bytes": size,
                "created": manifest.get("created"),
                "parents": ",".join(f"{p['stage']}/{p['key']}" for p in manifest.get("parents", [])),
                "path": str(manifest_path.parent),
            }
        )
    return rows
