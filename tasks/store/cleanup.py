"""Disk hygiene: find artifacts that no recent run, nor the champion, nor a live run still needs.

Kept: what is reachable (through manifests' parents, and local models the manifests name) from the
artifacts of the last ``keep_runs`` run records, from the champions, from every live run's lease (what it
has produced, reused or will read: ``leases.py``) and from the builds running now (their lock files name
their parents); the embedding stores (every precision) of the miners of everything kept and of every lease;
a staging folder whose key's lock is held (a live build); an interrupted training's ``.partial-<key>``
while its last sealed checkpoint is younger than ``keep_partial_hours``; and anything used more recently
than ``min_age_hours`` (a reused artifact's folder is touched on reuse). What a lease names stays whatever
its age. Every stage folder under ``artifacts/``, and its ``.staging/<stage>/``, is swept the same way.

``remove`` closes the window between listing and removing: under gc's exclusive lock (the one runs take,
shared, to add to their leases) it reads the leases, champions and live builds again and moves each folder
still unreferenced aside, then deletes it. A damaged champion record raises ``ChampionDamaged``: gc does
not guess what the champion is.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
import shutil
import uuid
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from tasks.store import leases, locks
from tasks.store.artifacts import MANIFEST, artifacts_root, read_manifest
from tasks.store.champion import read_champion
from tasks.store.locks import lock_held, lock_holder, lock_path, release_lock, staging_key, try_lock
from tasks.store.runs import RUNS, read_run_record, run_records

log = logging.getLogger(__name__)

NOT_STAGES = (RUNS, "champion", "embeddings", locks.STAGING)
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


def _model_folders(root: Path, locations: Iterable[str]) -> list[Path]:
    """The artifact folders of the models at ``locations`` that lie in the store (a trained model used as base,
    guide or miner)."""
    folders = []
    for location in (Path(p).resolve() for p in locations):
        if root in location.parents and len(parts := location.relative_to(root).parts) >= 2:
            folders.append(root / parts[0] / parts[1])
    return folders


def _champions(root: Path) -> list[Path]:
    """The model folders of every champion slot (by key under ``root`` too, in case the data folder moved);
    a damaged record raises ``ChampionDamaged``, so gc removes nothing rather than the champion's model."""
    folders = []
    for record in sorted((root / "champion").glob("*.json")):
        champion = read_champion(root.parent, record.stem)
        if champion is None:  # removed since the listing
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


def _leased(root: Path) -> tuple[list[Path], set[str]]:
    """What live runs' leases name: each artifact, its parents and the local models it reads; and their miners."""
    entries = leases.held_entries(root)
    folders = [_folder_of(root, item) for item in entries if item.get("stage") and item.get("key")]
    folders += [_folder_of(root, p) for item in entries for p in item.get("parents") or [] if isinstance(p, dict)]
    folders += [f for item in entries for f in _model_folders(root, item.get("models") or [])]
    miners = {item["miner"] for item in entries if isinstance(item.get("miner"), str)}
    return [f for f in folders if f is not None], miners


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
        todo += _model_folders(root, leases.model_locations(manifest))  # the local models it names
    return kept


def protected(data_dir: str | Path, keep_runs: int | None) -> tuple[set[Path], set[str]]:
    """The folders gc keeps (reachable from the last ``keep_runs`` runs, none when None; the champions; the
    leases; the live builds, whose inputs may be old and in no record yet) and the miners whose stores stay."""
    root = artifacts_root(data_dir).resolve()
    live = live_builds(root)
    leased, leased_miners = _leased(root)
    inputs = [f for f in (_folder_of(root, p) for build in live for p in build.get("parents", [])) if f is not None]
    recorded = _recorded(root, keep_runs) if keep_runs is not None else []
    kept = _reachable(root, [*recorded, *_champions(root), *inputs, *leased])
    return kept, kept_miners(kept, live) | leased_miners


def referenced(data_dir: str | Path, keep_runs: int) -> set[Path]:
    """Artifact folders reachable from the last ``keep_runs`` runs, the champions, the leases and live builds."""
    return protected(data_dir, keep_runs)[0]


def kept_miners(kept: set[Path], live: list[dict[str, Any]]) -> set[str]:
    """Fingerprints of the miners that kept artifacts were made with and live builds mine with."""
    params = [(read_manifest(folder) or {}).get("params", {}) for folder in kept]
    params += [build.get("params", {}) for build in live]
    return {p["miner"] for p in params if isinstance(p, dict) and isinstance(p.get("miner"), str)}


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
    if path.is_file():  # a lock left by a killed run, its folder gone (in .staging/, or beside it as before)
        gone = not path.with_suffix("").exists() and not (locks.staging_dir(path) / path.stem).exists()
        return path.name.endswith(".lock") and not lock_held(path) and gone
    if path.name.startswith(".trash-"):
        return True
    if key is not None and lock_held(lock_path(locks.final_of(path, key))):
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
    """Folders (and stray lock files) that may go: unreferenced, not live, not in use for ``min_age_hours``;
    and the leases of runs that died."""
    root = artifacts_root(data_dir).resolve()
    kept, miners = protected(data_dir, keep_runs)
    stale = [
        path
        for stage in _stage_dirs(root) + sorted((root / locks.STAGING).glob("*/"))  # its staging folders too
        for path in sorted(stage.iterdir())
        if _age_hours(path) >= min_age_hours and _stale_in_stage(path, kept, keep_partial_hours)
    ]
    stale += [
        store
        for store in sorted((root / "embeddings").glob("*"))
        if store.is_dir()
        and (store.name.startswith(".trash-") or store_fingerprint(store.name) not in miners)
        and _age_hours(store) >= min_age_hours
    ]
    return stale + leases.dead_leases(root)


def _size(path: Path) -> int:
    files = [path] if path.is_file() else [f for f in path.rglob("*") if f.is_file()]
    total = 0
    for file in files:
        with contextlib.suppress(FileNotFoundError):
            total += file.stat().st_size
    return total


def _set_aside(path: Path) -> Path | None:
    """Rename ``path`` to ``.trash-`` in its stage's ``.staging/`` (instant, so gc's lock is held briefly; no glob of
    the stage sees it); None if it is gone."""
    folder = path.parent if locks.in_staging(path) else locks.staging_dir(path)
    folder.mkdir(parents=True, exist_ok=True)
    trash = folder / f".trash-{path.name}-{uuid.uuid4().hex[:8]}"
    try:
        path.rename(trash)
    except FileNotFoundError:
        return None
    return trash


def _set_aside_under_lock(path: Path, key: str, keep_partial_hours: float) -> Path | None:
    """Set aside a staging folder (or drop a stray lock file) only while holding its key's lock, looking again
    under it: a run that started (or failed with a fresh checkpoint) since ``unreferenced`` looked keeps it."""
    lock = lock_path(locks.final_of(path, key))
    lock.parent.mkdir(parents=True, exist_ok=True)  # a staging entry whose stage's folder is gone still goes
    handle = try_lock(lock, create=path != lock)
    if handle is None:
        if path.exists():
            log.info("kept %s: a run took its lock since gc looked", path)
        return None
    try:
        if path == lock or young_checkpoint(path, keep_partial_hours):
            return None
        return _set_aside(path)
    finally:
        release_lock(handle, lock)  # unlinks the lock file too


def _root_of(path: Path) -> Path:
    """The artifacts folder an entry listed by ``unreferenced`` lies in (a lease, a staging entry: a level deeper)."""
    return path.parents[2] if path.parent.name == "live" or locks.in_staging(path) else path.parent.parent


def _doomed(path: Path, kept: set[Path], miners: set[str], keep_partial_hours: float) -> Path | None:
    """What ``path`` becomes once set aside for deletion, None when it stays (or is gone, or was a lock)."""
    if path.parent.name == "live":
        leases.remove_dead(path)  # only if its holder died: it looks under the lease's own lock
        return None
    if path.name.startswith(".trash-"):
        return path
    lock_key = path.name.removeprefix(".partial-").removesuffix(".lock") if path.name.endswith(".lock") else None
    if (key := lock_key or staging_key(path.name)) is not None:
        return _set_aside_under_lock(path, key, keep_partial_hours)
    if path.parent.name == "embeddings" and store_fingerprint(path.name) in miners:
        log.info("kept %s: a live run mines with it since gc looked", path)
        return None
    if path.parent.name != "embeddings" and path.resolve() in kept:
        log.info("kept %s: a live run holds it since gc looked", path)
        return None
    return _set_aside(path)


def remove(paths: list[Path], keep_partial_hours: float = KEEP_PARTIAL_HOURS, keep_runs: int | None = None) -> int:
    """Delete what ``unreferenced`` listed; returns the bytes freed.

    Under gc's exclusive lock, which a run takes (shared) to add to its lease, the leases, champions and live
    builds (and the last ``keep_runs`` records, when given) are read again, and each listed folder still
    unreferenced is renamed aside; it is deleted after the lock is let go. A run that took an artifact up
    since the listing keeps it; one that asks for it afterwards finds it gone and builds it again. Staging
    folders and lock files go under their key's lock, a dead run's lease under its own.
    """
    freed = 0
    for root in sorted({_root_of(path) for path in paths}):
        with leases.gc_lock(root, exclusive=True):
            kept, miners = protected(root.parent, keep_runs)
            doomed = [_doomed(path, kept, miners, keep_partial_hours) for path in paths if _root_of(path) == root]
        for trash in (t for t in doomed if t is not None):
            freed += _size(trash)
            shutil.rmtree(trash, ignore_errors=True)
    return freed
