"""Which model the ``export`` and ``push`` commands mean: ``models/<key>``, ``champion`` or a folder, and the
run that trained it (whose record gives the model card its lineage)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from tasks.models.resolve import ModelError, ResolvedModel, resolve_model
from tasks.store.artifacts import ArtifactRef, artifacts_root, find, read_manifest
from tasks.store.champion import read_champion
from tasks.store.runs import RunRecord, latest_run_of


@dataclass(frozen=True)
class ModelReference:
    model: ResolvedModel
    artifact: ArtifactRef | None  # the models/<key> artifact, when the model is one
    run: RunRecord | None  # the newest run record that trained it


def model_reference(ref: str, data_dir: str | Path) -> ModelReference:
    """``models/<key>`` (an artifact of ``data_dir``), ``champion`` (its current champion) or a
    sentence-transformers folder; anything else fails naming what was looked for."""
    if ref == "champion":
        current = read_champion(data_dir)
        if current is None:
            raise ModelError(f"{artifacts_root(data_dir)}: no champion yet (run the flow first, or name a model)")
        ref = f"models/{current['model_key']}"
    if ref.startswith("models/") and not Path(ref).is_dir():
        folder = artifacts_root(data_dir) / ref
        find(data_dir, "models", folder.name)  # checked, and on a URL store pulled into the mirror
        manifest = read_manifest(folder)
        if manifest is None or not (folder / "model" / "modules.json").is_file():
            raise ModelError(f"{folder}: no such model artifact (see `train-embeddings inspect`)")
        key = manifest["key"]
        model = ResolvedModel(ref, str(folder / "model"), "local", key)
        artifact = ArtifactRef("models", key, str(folder), manifest.get("rows"))
        return ModelReference(model, artifact, latest_run_of(data_dir, key))
    if not (Path(ref) / "modules.json").is_file():
        raise ModelError(f"{ref}: not models/<key>, champion, nor a sentence-transformers folder (no modules.json)")
    return ModelReference(resolve_model(ref), None, None)
