"""What every stage module shares: settings left out of keys at their "off" value, a parent's table, the log line."""

from __future__ import annotations

import pandas as pd
from prefect import get_run_logger

from tasks.store.artifacts import ArtifactRef, read_manifest


def unless_off(params: dict, **off) -> dict:
    """Leave out settings at their "off" value, so an option added later keeps existing artifacts' keys."""
    return {k: v for k, v in params.items() if not (k in off and v == off[k])}


def read_table(ref: ArtifactRef, name: str) -> pd.DataFrame:
    return pd.read_parquet(ref.folder / name)


def origin_of(ref: ArtifactRef) -> str:
    """Where a raw (or held-out) artifact's rows came from, for errors that name the source's file."""
    return (read_manifest(ref.folder) or {}).get("origin", ref.path)


def logged(ref: ArtifactRef) -> ArtifactRef:
    done = "cached" if ref.cached else "computed"
    get_run_logger().info("%s/%s: %s (%s rows) at %s", ref.stage, ref.key, done, ref.rows, ref.path)
    return ref
