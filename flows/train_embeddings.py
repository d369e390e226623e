"""The `train-embeddings` flow: NLI pairs → loss format → negatives → tokens → training → evaluation → report.

Every stage writes an artifact under ``<data_dir>/artifacts/<stage>/<key>/`` whose key derives
from all that determines it, so a re-run with the same parameters is served from those
artifacts and a changed parameter recomputes only what lies downstream of it.
"""

from __future__ import annotations

import inspect
import os
from dataclasses import fields
from pathlib import Path

from prefect import flow, get_run_logger

from tasks import report as reporting
from tasks import stages
from tasks.artifacts import read_manifest
from tasks.evaluation import METRICS
from tasks.labels import LOSSES
from tasks.models import resolve_model
from tasks.negatives import MiningConfig
from tasks.recipes import apply_recipe
from tasks.sources import DEFAULT_NLI_SAMPLE, REPO_ROOT
from tasks.training import TrainConfig

BUNDLED_MINILM = "sentence-transformers/all-MiniLM-L6-v2"


def build_config(cls, parameters: dict):
    """A config dataclass from the flow's flat parameters, by keyword: each field named once, never by position."""
    return cls(**{f.name: parameters[f.name] for f in fields(cls) if f.name in parameters})


def check_parameters(loss: str, mining: MiningConfig, max_pairs: int | None, promote_metric: str) -> None:
    """Fail before any data is read or model loaded."""
    if loss not in LOSSES:
        raise ValueError(f"parameter loss: {loss!r} is not one of {LOSSES}")
    if loss != "mnr" and mining.strategy != "none":
        raise ValueError(
            f"parameter negatives: {mining.strategy!r} applies to loss 'mnr' only; use 'none' with {loss!r}"
        )
    mining.check()
    if max_pairs is not None and max_pairs < 1:
        raise ValueError(f"parameter max_pairs: must be positive or None, got {max_pairs}")
    if promote_metric not in METRICS:
        raise ValueError(f"parameter promote_metric: {promote_metric!r} is not one of {METRICS}")


@flow(name="train-embeddings")  # not log_prints: it breaks dill's stdout capture (datasets)
def train_embeddings(
    loss: str = "mnr",
    negatives: str | None = None,
    nli_source: str = str(DEFAULT_NLI_SAMPLE.relative_to(REPO_ROOT)),
    max_pairs: int | None = 50_000,
    base_model: str = BUNDLED_MINILM,
    miner_model: str = BUNDLED_MINILM,
    epochs: float = 1.0,
    batch_size: int = 32,
    learning_rate: float = 5e-5,
    warmup_steps: int = 100,
    seed: int = 42,
    data_dir: str = "data",
    eval_steps: int = 100,
    max_steps: int = -1,
    eval_limit: int | None = None,
    range_min: int = 0,
    range_max: int = 50,
    margin: float = 0.05,
    max_score: float | None = None,
    num_negatives: int = 1,
    sampling: str = "top",
    negatives_layout: str = "rows",
    precision: str = "fp16",
    batch_sampler: str = "batch_sampler",
    mini_batch_size: int = 0,
    checkpoint_steps: int = 500,
    unpad: bool = True,
    attention: str = "auto",
    compile: bool = False,
    recipe: str | None = None,
    promote_metric: str = "stsb_test_spearman",
) -> dict:
    """Train a sentence-embedding model on NLI pairs and compare it with its base model.

    Offline by default: the bundled MNLI sample and the bundled all-MiniLM-L6-v2. With network,
    ``recipe="seed"`` is the notebook's setting (glue/mnli, bert-base-uncased) and ``recipe="strong"``
    the best we know; a recipe sets every parameter left at its default.
    ``eval_limit`` caps evaluation rows per split (for quick runs); ``max_steps`` caps training.
    The trained model becomes the champion only if it beats the current one on ``promote_metric``.
    """
    p = apply_recipe(recipe, dict(locals()), FLOW_DEFAULTS)
    negatives = p["negatives"] or ("soft" if p["loss"] == "mnr" else "none")  # the seed's MNR: soft negatives
    mining = build_config(MiningConfig, p | {"strategy": negatives, "layout": p["negatives_layout"]})
    config = build_config(TrainConfig, p)
    check_parameters(p["loss"], mining, p["max_pairs"], p["promote_metric"])
    config.check()
    log = get_run_logger()
    os.environ.setdefault("WANDB_DISABLED", "true")
    data_dir = str(Path(p["data_dir"]).resolve())

    # 1. Load and validate the NLI pairs (before any model is touched)
    raw = stages.load_pairs(p["nli_source"], p["max_pairs"], data_dir)
    # 2. Map labels to the loss's format
    pairs = stages.map_labels(raw, p["loss"], data_dir)
    # 3. Negatives for MNR
    train_data = pairs
    miner = resolve_model(p["miner_model"]) if negatives == "semi-hard" else None
    if negatives != "none":
        train_data = stages.mine_negatives(pairs, raw, mining, miner, data_dir)
    # 4. Token ids, once per data and tokenizer
    base = resolve_model(p["base_model"])
    ids = stages.tokenize(train_data, base, p["loss"], data_dir)
    # 5. Train
    model = stages.train(ids, base, config, data_dir)
    # 6. Evaluate the base and the trained model
    base_metrics = stages.evaluate(base, [], p["eval_limit"], data_dir)
    trained_metrics = stages.evaluate(stages.trained_model(model), [model], p["eval_limit"], data_dir)
    # 7. Promote to champion only if it beats the current one
    decision = stages.promote(model, trained_metrics, p["promote_metric"], data_dir)
    # 8. Report
    refs = {"pairs": raw, "loss-format": pairs, "train-data": train_data, "tokens": ids, "model": model}
    refs |= {"base-metrics": base_metrics, "trained-metrics": trained_metrics}
    refs["report"] = reporting.report(base_metrics, trained_metrics, refs, decision, data_dir)

    base_scores, trained_scores = stages.read_metrics(base_metrics), stages.read_metrics(trained_metrics)
    summary = {
        "parameters": p | {"negatives": negatives},
        "base_model": {"name": base.name, "source": base.source, "location": base.location},
        "miner_model": None if miner is None else {"name": miner.name, "source": miner.source},
        "model_path": str(model.folder / "model"),
        "training": (read_manifest(model.folder) or {}).get("training"),
        "artifacts": {
            step: {"path": r.path, "key": r.key, "rows": r.rows, "cached": r.cached} for step, r in refs.items()
        },
        "metrics": {m: {"base": base_scores[m], "trained": trained_scores[m]} for m in base_scores},
        "champion": decision,
    }
    summary["run_record"] = str(reporting.write_run_record(data_dir, summary))
    for metric, pair in summary["metrics"].items():
        log.info("%s: %.4f → %.4f", metric, pair["base"], pair["trained"])
    return summary


FLOW_DEFAULTS = {name: param.default for name, param in inspect.signature(train_embeddings.fn).parameters.items()}

if __name__ == "__main__":
    train_embeddings()
