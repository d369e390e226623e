"""Which model the ``export`` and ``push`` commands mean: ``models/<key>``, ``champion`` or a folder, and the
run that trained it (whose record gives the model card its lineage); and what that run and its base model tell
the card's front matter (``card_facts``: the base model's hub id, license and language, the Hub datasets, the
loss trained, a few rows of the texts)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from tasks.models.resolve import BUNDLED_ALIASES, BUNDLED_MINILM, ModelError, ResolvedModel, resolve_model
from tasks.store.artifacts import ArtifactRef, artifacts_root, find, read_manifest
from tasks.store.champion import read_champion
from tasks.store.runs import RunRecord, latest_run_of

LOSS_CLASSES = {"mnr": "MultipleNegativesRankingLoss", "gist": "GISTEmbedLoss", "softmax": "SoftmaxLoss",
                "cosine": "CosineSimilarityLoss"}  # fmt: skip
SHOWN_ROWS = 3  # the training rows a card shows


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


def base_card_data(location: str | None) -> dict:
    """The base model's own card metadata (its license, language), read from its folder's README (none when
    it has no card or one that does not parse: the card then states less, it never fails the release)."""
    import yaml
    from huggingface_hub import ModelCard

    readme = Path(location) / "README.md" if location else None
    try:
        return ModelCard.load(readme, ignore_metadata_errors=True).data.to_dict() if readme and readme.is_file() else {}
    except (OSError, ValueError, yaml.YAMLError):
        return {}


def card_facts(record: RunRecord | None, license: str | None, language: str | list[str] | None,
               model_name: str | None) -> dict:  # fmt: skip
    """What the card's front matter states beyond sentence-transformers' own fields. Each of license and
    language: as passed, else the run's parameter, else the base model's card; language then "en" when the
    run trained on the bundled (English) NLI sample."""
    from tasks.pairs.hub import FOLDER_REVISION
    from tasks.pairs.tables import SAMPLES
    from tasks.store.environment import REPO_ROOT

    params = record.parameters if record else {}
    base = base_card_data(record.base_model.location) if record else {}
    facts = {"license": license or params.get("license") or base.get("license")}
    if facts["license"] == base.get("license"):
        facts |= {k: base[k] for k in ("license_name", "license_link") if base.get(k)}
    where = Path(record.source).expanduser() if record and record.source else None  # a local source as read
    bundled_data = where is not None and SAMPLES in (where if where.is_absolute() else REPO_ROOT / where).parents
    language = language or params.get("language") or base.get("language") or ("en" if bundled_data else None)
    facts["language"] = [language] if isinstance(language, str) else language
    facts["model_name"] = model_name
    if record is None:
        return facts
    named = record.base_model
    bundled = named.source == "bundled" or (named.source == "hub" and named.name in BUNDLED_ALIASES)
    facts |= {"base_model": BUNDLED_MINILM if bundled else named.name, "base_model_relation": "finetune"}
    facts["base_model_on_hub"] = bundled or named.source == "hub"
    identity = record.source_identity or {}
    on_hub = identity.get("kind") == "hub" and not str(identity.get("revision")).startswith(FOLDER_REVISION)
    facts["datasets"] = [identity["repo"]] if on_hub else []
    name = identity["repo"] if on_hub else "/".join(Path(record.source).parts[-2:]) or "unknown"
    facts["model_name"] = model_name or f"{facts['base_model'].split('/')[-1]} fine-tuned on {name}"
    data = {"name": name, "rows": (record.training or {}).get("rows")}
    data |= {"id": identity["repo"], "revision": identity.get("revision")} if on_hub else {}
    return facts | {"training_data": data | text_rows(record), "loss": trained_loss(record)}


def text_rows(record: RunRecord) -> dict:
    """The loss's columns and the first rows of the texts the tokens were made from (none where that artifact
    is not on this machine): a card shows text, not the ids the trainer read."""
    import pyarrow.parquet as pq

    from tasks.store.catalog import PAIRS_FILE, TRIPLETS_FILE
    from tasks.training.tokens import LABEL_COLUMNS, text_columns

    ref, loss = record.artifacts.training_data, record.train_recipe.get("loss")
    if ref is None or loss not in LOSS_CLASSES:
        return {}
    try:
        table = pq.ParquetFile(ref.folder / (TRIPLETS_FILE if ref.stage == "triplets" else PAIRS_FILE))
        names = table.schema_arrow.names
        columns = text_columns(table.schema_arrow.empty_table(), loss) + [c for c in LABEL_COLUMNS if c in names]
        rows = next(table.iter_batches(batch_size=SHOWN_ROWS, columns=columns)).to_pylist()
    except (OSError, ValueError, KeyError, StopIteration):
        return {}
    return {"columns": columns, "samples": rows}


def trained_loss(record: RunRecord) -> dict:
    """The sentence-transformers loss that was trained, and MatryoshkaLoss around it (never our chunking wrapper:
    the class names come from what ran, else from the recipe)."""
    ran = (record.training or {}).get("loss_class") or LOSS_CLASSES.get(record.train_recipe.get("loss"), "")
    name, _, wrapper = ran.partition(" in ")
    dims = list(record.train_recipe.get("matryoshka_dims") or [])
    return {"name": name, "wrapper": wrapper or ("MatryoshkaLoss" if dims else None), "matryoshka_dims": dims}
