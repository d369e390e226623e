"""Disk hygiene: find artifacts that no recent run, nor the champion, nor a live run still needs.

Kept: what is reachable (through manifests' parents, and local models the manifests name) from the
artifacts of the last ``keep_runs`` run records, from the champions and from the builds running now
(their lock files name their parents); the embedding stores (every precision) of the miners of
everything kept; a staging folder whose key's lock is held (a live build); an interrupted training's
``.partial-<key>`` while its last sealed checkpoint is younger than ``keep_partial_hours``; and
anything used more recently than ``min_age_hours`` (a reused artifact's folder is touched on reuse).
Every stage folder under ``artifacts/`` is swept the same way, whatever the stage.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import logging
import shutil
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from tasks.store.artifacts import MANIFEST, artifacts_root, read_manifest
from tasks.store.locks import lock_held, lock_holder, lock_path, release_lock, staging_key, try_lock
from tasks.store.runs import RUNS, read_run_record, run_records

log = logging.getLogger(__name__)

NOT_STAGES = (RUNS, "champion", "embeddings")
SEAL = "checkpoint.sealed"  # tasks/training/checkpoints.py's seal, not imported: it pulls in transformers
KEEP_PARTIAL_HOURS = 72.0
PRECISIONS = ("bf16", "fp16")  # suffixes of GPU embedding stores, tasks/negatives/embeddings.py


def _age_hours(path: Path) -> float:
    """Hours since ``path`` last changed; 0 for one gone meanwhile (runs rename and unlink as gc looks)."""
    try:
        modified = dt.datetime.fromtimestamp(path.stat().st_mtime, dt.UTC)
    except FileNotFoundError:
        return 0.0
    return (dt.datetime.now(dt.UTC) - modified).total_seconds() / 3600


def _stage_dirs(root: Path) -> list[Path]:
    """Every stage's folder, including stages this module has never heard of."""
    return sorted(p for p in root.glob("*") if p.is_dir() and p.name not in NOT_STAGES)


def _folder_of(root: Path, ref: dict[str, Any]) -> Path | None:
    """An artifact's folder from a ref-like entry, by stage and key under ``root`` (so a moved data
    folder still resolves), falling back on its recorded path."""
    path = Path(ref["path"]) if ref.get("path") else None
    stage = ref.get("stage") or (path.parent.name if path else None)
    key = ref.get("key") or (path.name if path else None)
    if stage and key:
        return (root / stage / key).resolve()
    return path.resolve() if path else None


def _local_models(root: Path, manifest: dict[str, Any]) -> list[Path]:
    """Artifact folders of models the manifest names by location (a trained model used as base, guide or miner)."""
    folders = []
    for value in manifest.values():
        if isinstance(value, dict) and isinstance(value.get("location"), str):
            location = Path(value["location"]).resolve()
            if root in location.parents and len(parts := location.relative_to(root).parts) >= 2:
                folders.append(root / parts[0] / parts[1])
    return folders


def _champions(root: Path) -> list[Path]:
    """The model folders of every champion slot (by key under ``root`` too, in case the data folder moved)."""
    folders = []
    for record in sorted((root / "champion").glob("*.json")):
        try:
            champion = json.loads(record.read_text())
        except (OSError, ValueError):
            log.warning("champion record %s is unreadable; gc keeps nothing for it", record)
            continue
        if champion.get("model_path"):
            folders.append(Path(champion["model_path"]).parent.resolve())
        if champion.get("model_key"):
            folders.append(root / "models" / champion["model_key"])
    return folders


def _recorded(root: Path, keep_runs: int) -> list[Path]:
    """The artifacts the last ``keep_runs`` run records used."""
    paths = run_records(root.parent)[-keep_runs:] if keep_runs > 0 else []
    folders = []
    for path in paths:
        try:
            refs = read_run_record(path).artifacts.named().values()
        except (OSError, ValueError) as exc:  # a damaged record keeps nothing, and stops nothing
            log.warning("run record %s cannot be read (%s); it keeps no artifacts", path, exc)
            continue
        folders += [_folder_of(root, {"stage": ref.stage, "key": ref.key, "path": ref.path}) for ref in refs]
    return [f for f in folders if f is not None]


def live_builds(root: Path) -> list[dict[str, Any]]:
    """What the builds running now wrote into the locks they hold (their params and parents)."""
    return [
        lock_holder(lock)
        for stage in _stage_dirs(root)
        for lock in sorted(stage.glob(".partial-*.lock"))
        if lock_held(lock)
    ]


def _reachable(root: Path, start: Iterable[Path]) -> set[Path]:
    """``start`` and everything its manifests lead to: parents, and local models they name."""
    todo, kept = [p.resolve() for p in start], set()
    while todo:
        folder = todo.pop()
        if folder in kept:
            continue
        kept.add(folder)
        manifest = read_manifest(folder) or {}
        todo += [f for f in (_folder_of(root, p) for p in manifest.get("parents", [])) if f is not None]
        todo += _local_models(root, manifest)
    return kept


def referenced(data_dir: str | Path, keep_runs: int, live: list[dict[str, Any]] | None = None) -> set[Path]:
    """Artifact folders reachable from the last ``keep_runs`` runs, the champions and the ``live`` builds
    (a live build's inputs may be old and in no record yet)."""
    root = artifacts_root(data_dir).resolve()
    live = live_builds(root) if live is None else live
    inputs = [_folder_of(root, p) for build in live for p in build.get("parents", [])]
    return _reachable(root, [*_recorded(root, keep_runs), *_champions(root), *(f for f in inputs if f is not None)])


def kept_miners(kept: set[Path], live: list[dict[str, Any]]) -> set[str]:
    """Fingerprints of the miners that kept artifacts were made with and live builds mine with."""
    params = [(read_manifest(folder) or {}).get("params", {}) for folder in kept]
    params += [build.get("params", {}) for build in live]
    return {p["miner"] for p in params if isinstance(p, dict) and p.get("miner")}


def store_fingerprint(name: str) -> str:
    """The model fingerprint an embedding store belongs to: ``<fingerprint>`` or ``<fingerprint>-bf16``/``-fp16``."""
    fingerprint, _, precision = name.rpartition("-")
    return fingerprint if fingerprint and precision in PRECISIONS else name


def young_checkpoint(partial: Path, keep_partial_hours: float) -> bool:
    """Whether an interrupted build holds a sealed checkpoint worth resuming from (younger than the limit)."""
    return any(_age_hours(seal) < keep_partial_hours for seal in partial.glob(f"*/checkpoint-*/{SEAL}"))


def _stale_in_stage(path: Path, kept: set[Path], keep_partial_hours: float) -> bool:
    """Whether an entry of a stage folder (already old enough) may go."""
    key = staging_key(path.name)
    if path.is_file():  # a lock left by a killed run, its folder gone
        return path.name.endswith(".lock") and not lock_held(path) and not path.with_suffix("").exists()
    if path.name.startswith(".trash-"):
        return True
    if key is not None and lock_held(lock_path(path.parent / key)):
        return False  # a live build
    if path.name.startswith(".partial-"):
        return not young_checkpoint(path, keep_partial_hours)
    if path.name.startswith(".tmp-"):
        return True
    return (path / MANIFEST).exists() and path.resolve() not in kept


def unreferenced(
    data_dir: str | Path,
    keep_runs: int = 5,
    min_age_hours: float = 24.0,
    keep_partial_hours: float = KEEP_PARTIAL_HOURS,
) -> list[Path]:
    """Folders (and stray lock files) that may go: unreferenced, not live, not in use for ``min_age_hours``."""
    root = artifacts_root(data_dir).resolve()
    live = live_builds(root)
    kept = referenced(data_dir, keep_runs, live)
    stale = [
        path
        for stage in _stage_dirs(root)
        for path in sorted(stage.iterdir())
        if _age_hours(path) >= min_age_hours and _stale_in_stage(path, kept, keep_partial_hours)
    ]
    miners = kept_miners(kept, live)
    stale += [
        store
        for store in sorted((root / "embeddings").glob("*"))
        if store.is_dir() and store_fingerprint(store.name) not in miners and _age_hours(store) >= min_age_hours
    ]
    return stale


def _size(path: Path) -> int:
    files = [path] if path.is_file() else [f for f in path.rglob("*") if f.is_file()]
    total = 0
    for file in files:
        with contextlib.suppress(FileNotFoundError):
            total += file.stat().st_size
    return total


def _remove_under_lock(path: Path, key: str, keep_partial_hours: float) -> int:
    """Remove a staging folder or a stray lock file only while holding its key's lock, looking again
    under it: a run that started (or failed with a fresh checkpoint) since ``unreferenced`` looked keeps it."""
    lock = lock_path(path.parent / key)
    handle = try_lock(lock, create=path != lock)
    if handle is None:
        if path.exists():
            log.info("kept %s: a run took its lock since gc looked", path)
        return 0
    try:
        if path == lock or young_checkpoint(path, keep_partial_hours):
            return 0
        freed = _size(path)
        shutil.rmtree(path, ignore_errors=True)
        return freed
    finally:
        release_lock(handle, lock)


def remove(paths: list[Path], keep_partial_hours: float = KEEP_PARTIAL_HOURS) -> int:
    """Delete what ``unreferenced`` listed (staging folders and lock files under their key's lock);
    returns the bytes freed."""
    freed = 0
    for path in paths:
        if path.name.endswith(".lock"):
            key = path.name.removeprefix(".partial-").removesuffix(".lock")
            freed += _remove_under_lock(path, key, keep_partial_hours)
        elif (key := staging_key(path.name)) is not None:
            freed += _remove_under_lock(path, key, keep_partial_hours)
        elif path.exists():
            freed += _size(path)
            shutil.rmtree(path, ignore_errors=True)
    return freed
