"""The model card: sentence-transformers' own README of the model, plus how this model was made.

The lineage section records what a reader of a published model needs to trust or reproduce it: the
data source and its revision or checksum, the recipe, base → trained scores, the champion decision
and the environment (library versions, device, commit). The same facts go beside it as
``lineage.json``, for machines. Nothing secret is in either: they are built from the run record and
the model's manifest, which never hold a token.
"""

from __future__ import annotations

import json
from pathlib import Path

from tasks.store.runs import RunRecord

CARD = "README.md"  # sentence-transformers' name for the card, and the Hub's
LINEAGE = "lineage.json"
SECTION = "## Lineage (train-embeddings)"
# What every card of a trained model states (tests fail on a missing one)
REQUIRED = ("source", "recipe", "scores", "champion", "environment")
AS_TRAINED = ("device", "mixed_precision", "loss_class", "processes", "steps", "train_loss", "seconds")
FORMAT_USAGE = {
    "onnx": 'SentenceTransformer(path, backend="onnx")',
    "onnx-int8": 'SentenceTransformer(path, backend="onnx", model_kwargs={"file_name": "onnx/model_qint8.onnx"})',
    "openvino": 'SentenceTransformer(path, backend="openvino")',
    "openvino-int8": (
        'SentenceTransformer(path, backend="openvino", model_kwargs={"file_name": "openvino/openvino_model_qint8.xml"})'
    ),
    "static": 'SentenceTransformer(path + "/static")  # model2vec StaticEmbedding',
}


def champion_facts(model_key: str | None, decision: dict, champion: dict | None) -> dict:
    """The champion decision as the card states it: for the champion, when and on what it was promoted (the
    same on every re-run, so a re-run's release is served from the store); else why this run kept the other."""
    if champion and model_key and champion.get("model_key") == model_key:
        previous = champion.get("previous") or {}
        return {
            "status": "champion",
            "metric": champion.get("metric"),
            "score": champion.get("score"),
            "promoted_at": champion.get("promoted_at"),
            "replaced": {k: previous.get(k) for k in ("model_key", "score")} if previous else None,
        }
    if not decision:
        return {}
    return {"status": "not promoted", "metric": decision.get("metric"), "reason": decision.get("reason"),
            "champion": (champion or {}).get("model_key")}  # fmt: skip


def lineage_from_run(record: RunRecord | None, champion: dict | None = None,
                     environment: dict | None = None) -> dict:  # fmt: skip
    """The card's facts from a run record: the source's identity (hub commit, or file checksums), the recipe
    and what really ran, the scores, the champion decision (against ``champion``, the data folder's record
    after this run) and the environment that trained the model (``environment`` where the record has none:
    a model with no run, or a record written before it held one)."""
    if record is None:
        return {"model_key": None, "source": {}, "recipe": {}, "scores": {}, "evaluation": None,
                "champion": {}, "environment": environment or {}}  # fmt: skip
    source = {"name": record.source, **(record.source_identity or {})} if record.source else {}
    recipe = {"train_recipe": record.train_recipe, "mining": record.mining}
    recipe["base_model"] = record.base_model.name
    recipe["miner_model"] = None if record.miner_model is None else record.miner_model.name
    recipe["max_pairs"] = record.parameters.get("max_pairs")
    trained = record.training or {}
    recipe["as_trained"] = {k: trained.get(k) for k in AS_TRAINED if k in trained}  # what the machine really ran
    model_key = None if record.artifacts.model is None else record.artifacts.model.key
    return {
        "model_key": model_key,
        "source": source,
        "recipe": recipe if record.train_recipe else {},
        "scores": record.metrics,
        "evaluation": record.evaluation or None,
        "champion": champion_facts(model_key, record.champion, champion),
        "environment": record.environment or environment or {},
    }


def _source_line(source: dict) -> str:
    if not source:
        return "unknown"
    where = source.get("name") or source.get("repo") or source.get("file") or json.dumps(source)
    pinned = [f"{k} `{source[k]}`" for k in ("revision", "sha256") if source.get(k)]
    pinned += [f"`{f['file']}` sha256 `{f['sha256']}`" for f in source.get("files") or []]
    return f"`{where}`" + (f" ({', '.join(pinned)})" if pinned else "")


def lineage_markdown(lineage: dict, formats: list[str]) -> str:
    """The lineage section of the card."""
    lines = [SECTION, "", f"How train-embeddings made this model (the same facts are in `{LINEAGE}`).", ""]
    lines += [f"**Data source**: {_source_line(lineage.get('source') or {})}", ""]
    recipe = lineage.get("recipe") or {}
    lines += ["**Recipe**:", "", "```json", json.dumps(recipe, indent=2, default=str), "```", ""]
    scores = lineage.get("scores") or {}
    if scores:
        lines += ["**Scores** (base → trained):", "", "| metric | base | trained |", "|---|---|---|"]
        for metric, pair in scores.items():
            lines.append(f"| {metric} | {pair['base']:.4f} | {pair['trained']:.4f} |")
        lines.append("")
    decision = lineage.get("champion") or {}
    if decision.get("status") == "champion":
        replaced = decision.get("replaced") or {}
        score = f" ({replaced['score']:.4f})" if isinstance(replaced.get("score"), float) else ""
        before = f", replacing {replaced.get('model_key')}{score}" if replaced else ""
        lines += [f"**Champion decision**: the champion on {decision['metric']} ({decision['score']:.4f}), promoted "
                  f"{decision['promoted_at']}{before}", ""]  # fmt: skip
    elif decision:
        lines += [f"**Champion decision** ({decision.get('metric')}): not promoted: {decision.get('reason')}", ""]
    environment = lineage.get("environment") or {}
    lines += ["**Environment**:", "", "```json", json.dumps(environment, indent=2, default=str), "```", ""]
    if formats:
        lines += ["**Exports** in this folder (`tasks/shipping/backends.py` loads them without optimum):", ""]
        lines += [f"- `{fmt}`: `{FORMAT_USAGE[fmt]}`" for fmt in formats]
        lines.append("")
    return "\n".join(lines)


def model_card(base_card: str, lineage: dict, formats: list[str]) -> str:
    """sentence-transformers' card with the lineage section appended (an earlier one replaced)."""
    base_card = base_card.split(f"\n{SECTION}")[0].rstrip()
    if not base_card:
        base_card = "---\nlibrary_name: sentence-transformers\npipeline_tag: sentence-similarity\n---\n"
    return f"{base_card}\n\n{lineage_markdown(lineage, formats)}"


def missing_fields(folder: Path) -> list[str]:
    """The required lineage fields a card folder lacks (empty for a complete card)."""
    try:
        lineage = json.loads((folder / LINEAGE).read_text())
        card = (folder / CARD).read_text()
    except (OSError, ValueError):
        return list(REQUIRED)
    missing = [field for field in REQUIRED if not lineage.get(field)]
    return missing + ([] if SECTION in card else ["card section"])


def write_card(model_folder: Path, out: Path, lineage: dict, formats: list[str]) -> None:
    """README.md and lineage.json into ``out``, from the card ``model_folder`` has (sentence-transformers')."""
    base = (model_folder / CARD).read_text() if (model_folder / CARD).is_file() else ""
    for name in (CARD, LINEAGE):  # may be hard links to the model's own files: never write through them
        (out / name).unlink(missing_ok=True)
    (out / CARD).write_text(model_card(base, lineage, formats))
    (out / LINEAGE).write_text(json.dumps(lineage, indent=2, default=str))
