"""Disk hygiene: find artifacts that no recent run, nor the champion, still refers to.

An artifact is kept when it is reachable (through manifests' parents) from the artifacts of the
last ``keep_runs`` run records or from the champion, when it is the embedding cache of a kept
miner, or when it is younger than ``min_age_hours`` (a run in progress has no record yet).
"""

from __future__ import annotations

import datetime as dt
import json
import shutil
from pathlib import Path

from tasks.store.artifacts import MANIFEST, artifacts_root, read_manifest
from tasks.store.champion import read_champion

STAGES_WITH_MANIFESTS = ("raw", "pairs", "triplets", "models", "metrics", "reports")


def _age_hours(path: Path) -> float:
    modified = dt.datetime.fromtimestamp(path.stat().st_mtime, dt.UTC)
    return (dt.datetime.now(dt.UTC) - modified).total_seconds() / 3600


def referenced(data_dir: str | Path, keep_runs: int) -> set[Path]:
    """Artifact folders reachable from the last ``keep_runs`` runs and the champion."""
    root = artifacts_root(data_dir)
    records = sorted((root / "runs").glob("*.json"))[-keep_runs:] if keep_runs > 0 else []
    todo: list[Path] = []
    for record in records:
        todo += [Path(a["path"]) for a in json.loads(record.read_text()).get("artifacts", {}).values()]
    champion = read_champion(data_dir)
    if champion:
        todo.append(Path(champion["model_path"]).parent)
    kept: set[Path] = set()
    while todo:
        folder = todo.pop().resolve()
        if folder in kept:
            continue
        kept.add(folder)
        manifest = read_manifest(folder) or {}
        todo += [Path(p["path"]) for p in manifest.get("parents", [])]
        miner = manifest.get("params", {}).get("miner")
        if miner:
            kept.add((root / "embeddings" / miner).resolve())
    return kept


def unreferenced(data_dir: str | Path, keep_runs: int = 5, min_age_hours: float = 24.0) -> list[Path]:
    """Folders that may go: not referenced, not the champion, old enough."""
    root = artifacts_root(data_dir)
    kept = referenced(data_dir, keep_runs)
    candidates = [p for stage in STAGES_WITH_MANIFESTS for p in sorted((root / stage).glob("*")) if p.is_dir()]
    candidates += [p for p in sorted((root / "embeddings").glob("*")) if p.is_dir()]
    return [
        p
        for p in candidates
        if p.resolve() not in kept
        and _age_hours(p) >= min_age_hours
        and (
            p.name.startswith((".tmp-", ".trash-", ".partial-"))
            or (p / MANIFEST).exists()
            or p.parent.name == "embeddings"
        )
    ]


def remove(paths: list[Path]) -> int:
    """Delete the folders; returns the bytes freed."""
    freed = 0
    for path in paths:
        freed += sum(f.stat().st_size for f in path.rglob("*") if f.is_file())
        shutil.rmtree(path, ignore_errors=True)
    return freed
