"""Which model mines semi-hard negatives and guides GIST: a named model, or the store's current champion."""

from __future__ import annotations

from prefect import get_run_logger

from tasks.models.resolve import ResolvedModel, resolve_model
from tasks.store.artifacts import find
from tasks.store.champion import read_champion


def resolve_miner(miner_model: str, base_model: str, data_dir: str) -> ResolvedModel:
    """``miner_model``, resolved; ``champion``: the current champion of ``data_dir``, so each scheduled retrain
    mines with the best model so far (a new champion is a new fingerprint, and so new triplets); the base model
    while there is none."""
    if miner_model != "champion":
        return resolve_model(miner_model)
    current = read_champion(data_dir)
    if current is None:
        get_run_logger().info("miner_model=champion: no champion in %s yet, mining with the base model", data_dir)
        return resolve_model(base_model)
    get_run_logger().info("miner_model=champion: mining with %s", current["model_key"])
    found = find(data_dir, "models", current["model_key"])  # on a URL store: pulled into the mirror
    return resolve_model(str(found.folder / "model") if found else current["model_path"])
