"""The run record: one JSON per flow run under ``artifacts/runs/``, what ``gc`` reads to keep a run's artifacts."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

from tasks.store.artifacts import artifacts_root, atomic_write_text


def write_run_record(data_dir: str, summary: dict) -> Path:
    """One JSON per run: parameters, sources, models, artifacts, metrics, the champion decision."""
    folder = artifacts_root(data_dir) / "runs"
    folder.mkdir(parents=True, exist_ok=True)
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%S%fZ")
    path = folder / f"{stamp}.json"
    atomic_write_text(path, json.dumps(summary, indent=2, default=str))
    return path
