"""The model card: sentence-transformers' README of the model, with the Hub's metadata and how it was made.

The front matter is rebuilt with huggingface_hub's ``ModelCardData``: base model (``base_model_relation: finetune``),
Hub datasets, license, language, and a ``model-index`` of the run's final scores named as MTEB names them (with
the sample size where ``eval_limit`` capped them), not the trainer's "sts dev". sentence-transformers' body stays
(hyperparameters, logs, citations: only the trainer knew them) but for its training-dataset section: the trainer
saw token ids through our chunking wrapper, so that section is rendered from the run's facts (text rows, the
loss trained). At release time, so every model shipped gets it, one trained before this change too.

The lineage section records what a reader of a published model needs to trust or reproduce it: the
data source and its revision or checksum, the recipe, base → trained scores, the champion decision
and the environment (library versions, device, commit). The same facts go beside it as
``lineage.json``, for machines. Nothing secret is in either: they are built from the run record and
the model's manifest, which never hold a token.
"""

from __future__ import annotations

import html
import json
import re
from pathlib import Path
from typing import TYPE_CHECKING

from tasks.shipping.backends import export_usage_lines, pooling_of
from tasks.shipping.references import card_facts
from tasks.store.runs import RunRecord

if TYPE_CHECKING:
    from huggingface_hub import EvalResult, ModelCardData

CARD = "README.md"  # sentence-transformers' name for the card, and the Hub's
LINEAGE = "lineage.json"
SECTION = "## Lineage (train-embeddings)"
# What every card of a trained model states (tests fail on a missing one)
REQUIRED = ("source", "recipe", "scores", "champion", "environment")
AS_TRAINED = ("device", "mixed_precision", "loss_class", "processes", "steps", "train_loss", "seconds")
EMPTY_CARD = "---\nlibrary_name: sentence-transformers\npipeline_tag: sentence-similarity\n---\n"
LOSS_DOCS = "https://sbert.net/docs/package_reference/sentence_transformer/losses.html#"
BODY_ONLY = ("training_data", "loss", "base_model_on_hub")  # card facts for the body, not the front matter
SHOWN_CHARS = 300  # a training text in the card is cut at this length
TRAINING_DATASET = re.compile(r"^### Training Dataset\n.*?(?=^#{2,3} )", re.S | re.M)  # sentence-transformers' section


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


def lineage_from_run(record: RunRecord | None, champion: dict | None = None, environment: dict | None = None, *,
                     license: str | None = None, language: str | list[str] | None = None,
                     model_name: str | None = None) -> dict:  # fmt: skip
    """The card's facts from a run record: the source's identity (hub commit, or file checksums), the recipe
    and what really ran, the scores, the champion decision (against ``champion``, the data folder's record
    after this run), the environment that trained the model (``environment`` where the record has none:
    a model with no run, or a record written before it held one) and the Hub metadata (``card_facts``)."""
    card = card_facts(record, license, language, model_name)
    if record is None:
        return {"model_key": None, "source": {}, "recipe": {}, "scores": {}, "evaluation": None,
                "champion": {}, "environment": environment or {}, "card": card}  # fmt: skip
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
        "card": card,
    }


def evaluated_rows(task: str, split: str, limit: int | None) -> tuple[int, int] | None:
    """Rows scored and rows in the split, where ``eval_limit`` capped a bundled split (hub tasks are not)."""
    from tasks.evaluation.data import bundled_task_data, stsb_pairs

    if not limit:
        return None
    if task == "STSBenchmark":
        return len(stsb_pairs(split, limit)), len(stsb_pairs(split))
    capped, whole = bundled_task_data(task, limit), bundled_task_data(task, None)
    return (len(capped[split]), len(whole[split])) if capped and split in capped else None


def eval_results(lineage: dict) -> list[EvalResult]:
    """The trained model's final scores as the Hub's EvalResults, named as MTEB names them: STS-B validation
    and test Spearman (our own scoring of mteb's STSBenchmark data), then each MTEB task's main score."""
    from huggingface_hub import EvalResult

    from tasks.evaluation import mteb_tasks
    from tasks.evaluation.settings import DEFAULT_TASKS, STSB_SPLITS

    scores, evaluation = lineage.get("scores") or {}, lineage.get("evaluation") or {}
    wanted = [(f"stsb_{split}_spearman", "STSBenchmark", "stsb", split) for split in STSB_SPLITS]
    wanted += [(mteb_tasks.metric_name(t), t, t, None) for t in evaluation.get("tasks", DEFAULT_TASKS)]
    results = []
    for metric, task, data, split in wanted:
        if "trained" not in scores.get(metric, {}):
            continue
        meta = mteb_tasks.get_task(task).metadata
        split = split or meta.eval_splits[0]
        pinned = str((evaluation.get("data") or {}).get(data, ""))
        rows = evaluated_rows(task, split, evaluation.get("limit"))
        sample = {"eval_limit": evaluation["limit"], "rows": rows[0], "split_rows": rows[1]} if rows else None
        results.append(EvalResult(
            task_type=meta.type, dataset_type=meta.dataset["path"], dataset_name=f"MTEB {meta.name}",
            dataset_config="default" if meta.hf_subsets == ["default"] else None, dataset_split=split,
            dataset_revision=pinned.rpartition("@")[2] if pinned.startswith("hub:") else None, dataset_args=sample,
            metric_type=meta.main_score, metric_name=meta.main_score, metric_value=scores[metric]["trained"],
        ))  # fmt: skip
    return results


def front_matter(existing: dict, lineage: dict, results: list[EvalResult]) -> ModelCardData:
    """sentence-transformers' metadata (tags, pipeline, widget) with ours over it: the base model, datasets,
    license, language, name, and the ``model-index`` of our scores in place of the trainer's."""
    from huggingface_hub import ModelCardData

    facts = {k: v for k, v in (lineage.get("card") or {}).items() if v and k not in BODY_ONLY}
    loss = (lineage.get("card") or {}).get("loss") or {}
    dropped = ("model_name", "model-index", "metrics") if results else ("model_name",)  # the trainer's "sts dev"
    kept = {k: v for k, v in existing.items() if k not in dropped}
    tags = [t for t in kept.pop("tags", None) or [] if not (loss and t.startswith("loss:"))]
    tags += [f"loss:{cls}" for cls in (loss.get("wrapper"), loss.get("name")) if cls]
    kept |= {"metrics": sorted({r.metric_type for r in results})} if results else {}
    name = facts.pop("model_name", None) or existing.get("model_name") or ("SentenceTransformer" if results else None)
    data = ModelCardData(**kept | facts, tags=tags or None, model_name=name, eval_results=results or None)
    data.model_name = name or data.model_name  # a model-index kept from the folder's own card names it otherwise
    return data


def _loss_markdown(loss: dict) -> str:
    link = "[<code>{0}</code>](" + LOSS_DOCS + "{1})"
    shown = link.format(loss["name"], loss["name"].lower())
    if loss.get("wrapper"):
        dims = f" at dimensions {', '.join(map(str, loss['matryoshka_dims']))}" if loss.get("matryoshka_dims") else ""
        shown = f"{link.format(loss['wrapper'], loss['wrapper'].lower())} wrapping {shown}{dims}"
    return shown


def described(body: str, card: dict) -> str:
    """sentence-transformers' title and description lines filled in where it knew nothing (it trained offline,
    on ids): the model's name, what it was fine-tuned from, on what, its language and license."""
    base, data = card.get("base_model"), card.get("training_data") or {}
    hub = "[{0}](https://huggingface.co/{1}{0})"
    base = hub.format(base, "") if base and card.get("base_model_on_hub") else base and f"`{base}`"
    fills = {"Base model": base, "Training Dataset": hub.format(data["id"], "datasets/") if data.get("id") else None,
             "Language": ", ".join(card.get("language") or []), "License": card.get("license")}  # fmt: skip
    for field, value in fills.items():
        filled = f"- **{field}:** {value}"
        body = re.sub(rf"<!-- - \*\*{field}:\*\* .*? -->", lambda _, line=filled: line, body) if value else body
    body = re.sub(r"^# .*$", lambda _: f"# {card.get('model_name')}", body, count=1, flags=re.M)
    return body.replace(" model trained.", f" model finetuned from {base}.", 1) if base else body


def _cell(value: object) -> str:
    text = html.escape(str(value)[:SHOWN_CHARS], quote=False).replace("|", "\\|").replace("\n", "<br>")
    return f"<code>{text}</code>"


def training_data_markdown(card: dict) -> str:
    """The training-dataset section, as sentence-transformers lays it out: the data, its size and columns,
    a few text rows, and the sentence-transformers loss trained."""
    data, loss = card.get("training_data") or {}, card.get("loss") or {}
    lines = ["### Training Dataset", "", f"#### {data.get('name') or 'Unnamed Dataset'}", ""]
    if data.get("id"):
        url = f"https://huggingface.co/datasets/{data['id']}"
        lines.append(f"* Dataset: [{data['id']}]({url}) at revision `{data.get('revision')}`")
    if data.get("rows"):
        lines.append(f"* Size: {data['rows']:,} training samples")
    columns = data.get("columns") or []
    if columns:
        lines.append("* Columns: " + ", ".join(f"<code>{c}</code>" for c in columns))
    if data.get("samples"):
        lines += ["* Samples:", "  | " + " | ".join(columns) + " |", "  |" + ":---|" * len(columns)]
        lines += ["  | " + " | ".join(_cell(row.get(c)) for c in columns) + " |" for row in data["samples"]]
    if loss.get("name"):
        lines.append(f"* Loss: {_loss_markdown(loss)}")
    return "\n".join(lines) + "\n\n"


def _source_line(source: dict) -> str:
    if not source:
        return "unknown"
    where = source.get("name") or source.get("repo") or source.get("file") or json.dumps(source)
    pinned = [f"{k} `{source[k]}`" for k in ("revision", "sha256") if source.get(k)]
    pinned += [f"`{f['file']}` sha256 `{f['sha256']}`" for f in source.get("files") or []]
    return f"`{where}`" + (f" ({', '.join(pinned)})" if pinned else "")


def evaluation_note(lineage: dict, results: list[EvalResult]) -> list[str]:
    """What the scores were measured on: the rows when ``eval_limit`` capped them, and that the trainer's
    ``sts-dev`` figures above are another measurement (during training, on the validation split it was given)."""
    capped = [f"{r.dataset_name} {r.dataset_split}: {r.dataset_args['rows']:,} of {r.dataset_args['split_rows']:,}"
              for r in results if r.dataset_args]  # fmt: skip
    from tasks.report.tables import held_out_line

    limit = (lineage.get("evaluation") or {}).get("limit")
    measured = f"capped by `eval_limit` = {limit}: {'; '.join(capped)} rows" if capped else "on the whole splits"
    note = [f"The trained scores are the card's `model-index`, measured after training {measured}. The `sts-dev`"
            " figures sentence-transformers reports above are the trainer's, during training, on the STS-B "
            "validation split it was given (the whole split in the flow).", ""]  # fmt: skip
    if capped:  # a capped STS-B of 0.93 beside a full one of 0.82 reads as a better model: say it where it shows
        note += [f"**Capped by `eval_limit` = {limit}**: these scores compare only with scores capped alike.", ""]
    held_out = held_out_line(lineage.get("evaluation"))
    return note + ([held_out, ""] if held_out else [])


def lineage_markdown(lineage: dict, formats: list[str], results: list[EvalResult] | None = None,
                     pooling: tuple[str, bool] = ("mean", True)) -> str:  # fmt: skip
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
        lines += ["", *evaluation_note(lineage, results or [])]
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
        lines += ["**Exports** in this folder, and how the tests run them from it:", ""]
        lines += [*export_usage_lines(formats, pooling), ""]
    return "\n".join(lines)


def model_card(base_card: str, lineage: dict, formats: list[str], pooling: tuple[str, bool] = ("mean", True)) -> str:
    """sentence-transformers' card with our front matter, its training-dataset section rendered from the run's
    facts (where the run has them), and the lineage section appended (an earlier one replaced)."""
    from huggingface_hub import ModelCard

    card = ModelCard(base_card.split(f"\n{SECTION}")[0].rstrip() or EMPTY_CARD, ignore_metadata_errors=True)
    results = eval_results(lineage)
    card.data = front_matter(card.data.to_dict(), lineage, results)
    body = card.text.rstrip() + "\n\n"
    if (lineage.get("card") or {}).get("loss"):  # a run's model: the section from its facts
        body, section = described(body, lineage["card"]), training_data_markdown(lineage["card"])
        body, found = TRAINING_DATASET.subn(lambda _: section, body, count=1)
        body = body if found else body + section
    return f"---\n{card.data.to_yaml()}\n---\n{body}{lineage_markdown(lineage, formats, results, pooling)}"


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
    (out / CARD).write_text(model_card(base, lineage, formats, pooling_of(model_folder)))
    (out / LINEAGE).write_text(json.dumps(lineage, indent=2, default=str))
