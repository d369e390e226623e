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
from tasks.evaluation import DEFAULT_TASKS, EvalSettings
from tasks.labels import LOSSES, RANKING
from tasks.models import embedding_dimension, hub_reachable, resolve_model
from tasks.negatives import MiningConfig
from tasks.recipes import RECIPES, apply_recipe
from tasks.sources import DEFAULT_NLI_SAMPLE, REPO_ROOT
from tasks.training import TrainConfig, check_matryoshka_dims

BUNDLED_MINILM = "sentence-transformers/all-MiniLM-L6-v2"

# The parameters a recipe may set are None in the signature ("not passed"); these are their values
# when neither the caller nor a recipe sets them: the seed's training settings on the bundled data
# and model. negatives stays None: it then follows the loss.
UNSET_DEFAULTS = RECIPES["seed"] | {
    "loss": "mnr",
    "negatives": None,
    "nli_source": str(DEFAULT_NLI_SAMPLE.relative_to(REPO_ROOT)),
    "base_model": BUNDLED_MINILM,
}


def build_config(cls, parameters: dict):
    """A config dataclass from the flow's flat parameters, by keyword: each field named once, never by position."""
    return cls(**{f.name: parameters[f.name] for f in fields(cls) if f.name in parameters})


def resolve_parameters(given: dict) -> dict:
    """The run's settings: what was passed, then the recipe's values, then the defaults; list-valued
    parameters as tuples."""
    p = apply_recipe(given.get("recipe"), given, UNSET_DEFAULTS)
    p["negatives"] = p["negatives"] or ("soft" if p["loss"] == "mnr" else "none")  # the seed's MNR: soft negatives
    p["matryoshka_dims"] = tuple(p.get("matryoshka_dims") or ())
    p["eval_dims"] = p["matryoshka_dims"] if p.get("eval_dims") is None else tuple(p["eval_dims"])
    p["eval_tasks"] = tuple(DEFAULT_TASKS if p.get("eval_tasks") is None else p["eval_tasks"])
    return p


def check_parameters(p: dict, mining: MiningConfig, config: TrainConfig, settings: EvalSettings) -> None:
    """Fail before any data is read or model loaded, naming the parameter."""
    loss = p["loss"]
    if loss not in LOSSES:
        raise ValueError(f"parameter loss: {loss!r} is not one of {LOSSES}")
    if loss not in RANKING and mining.strategy != "none":
        raise ValueError(
            f"parameter negatives: {mining.strategy!r} applies to losses {RANKING} only; use 'none' with {loss!r}"
        )
    mining.check()
    config.check()
    if p["max_pairs"] is not None and p["max_pairs"] < 1:
        raise ValueError(f"parameter max_pairs: must be positive or None, got {p['max_pairs']}")
    settings.check(hub_reachable)
    metrics = settings.metric_names()
    if p["promote_metric"] not in metrics:
        raise ValueError(f"parameter promote_metric: {p['promote_metric']!r} is not one of {metrics}")


@flow(name="train-embeddings")  # not log_prints: it breaks dill's stdout capture (datasets)
def train_embeddings(
    loss: str | None = None,
    negatives: str | None = None,
    nli_source: str | None = None,
    max_pairs: int | None = 50_000,
    base_model: str | None = None,
    miner_model: str = BUNDLED_MINILM,
    epochs: float | None = None,
    batch_size: int | None = None,
    learning_rate: float | None = None,
    warmup_steps: int | None = None,
    seed: int = 42,
    data_dir: str = "data",
    eval_steps: int | None = None,
    max_steps: int = -1,
    eval_limit: int | None = None,
    eval_tasks: list[str] | None = None,
    range_min: int = 0,
    range_max: int = 50,
    margin: float = 0.05,
    relative_margin: float = 0.0,
    max_score: float | None = None,
    num_negatives: int = 1,
    sampling: str = "top",
    negatives_layout: str = "rows",
    matryoshka_dims: list[int] | None = None,
    eval_dims: list[int] | None = None,
    precision: str | None = None,
    batch_sampler: str | None = None,
    mini_batch_size: int | None = None,
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
    the best we know; a recipe sets only the parameters left unset (None), so a value passed always wins.
    Unset: loss mnr (gist: GISTEmbedLoss guided by ``miner_model``), the bundled MNLI sample, MiniLM,
    1 epoch, batch 32, learning rate 5e-5, 100 warmup and evaluation steps, fp16 on CUDA.
    ``matryoshka_dims`` trains inside MatryoshkaLoss and scores STS-B at each dimension (``eval_dims``
    scores other dimensions, or any model's truncations).
    ``eval_tasks`` are MTEB task names (default Banking77Classification; STSBenchmark is bundled too).
    ``eval_limit`` caps evaluation rows per split (for quick runs); ``max_steps`` caps training.
    The trained model becomes the champion only if it beats the current one on ``promote_metric``,
    evaluated the same way.
    """
    p = resolve_parameters(dict(locals()))
    negatives = p["negatives"]
    mining = build_config(MiningConfig, p | {"strategy": negatives, "layout": p["negatives_layout"]})
    config = build_config(TrainConfig, p)
    settings = EvalSettings(p["eval_tasks"], p["eval_limit"], p["eval_dims"])
    check_parameters(p, mining, config, settings)
    if settings.dims:  # against the base model's dimension, read from its folder, before any model loads
        dimension = embedding_dimension(resolve_model(p["base_model"]).location)
        check_matryoshka_dims(config.matryoshka_dims, p["loss"], dimension)
        check_matryoshka_dims(settings.dims, "", dimension, parameter="eval_dims")
    log = get_run_logger()
    os.environ.setdefault("WANDB_DISABLED", "true")
    data_dir = str(Path(p["data_dir"]).resolve())

    # 1. Load and validate the NLI pairs (before any model is touched)
    raw = stages.load_pairs(p["nli_source"], p["max_pairs"], data_dir)
    # 2. Map labels to the loss's format
    pairs = stages.map_labels(raw, p["loss"], data_dir)
    # 3. Negatives for MNR
    train_data = pairs
    miner = resolve_model(p["miner_model"]) if negatives == "semi-hard" or p["loss"] == "gist" else None
    if negatives != "none":
        train_data = stages.mine_negatives(pairs, raw, mining, miner, data_dir)
    # 4. Token ids, once per data and tokenizer
    base = resolve_model(p["base_model"])
    ids = stages.tokenize(train_data, base, p["loss"], data_dir)
    # 5. Train (GIST: the miner model guides the in-batch negatives)
    model = stages.train(ids, base, config, data_dir, guide=miner if p["loss"] == "gist" else None)
    # 6. Evaluate the base and the trained model
    base_metrics = stages.evaluate(base, [], settings, data_dir)
    trained_metrics = stages.evaluate(stages.trained_model(model), [model], settings, data_dir)
    # 7. Promote to champion only if it beats the current one, evaluated the same way
    decision = stages.promote(model, trained_metrics, settings, p["promote_metric"], data_dir)
    # 8. Report
    refs = {"pairs": raw, "loss-format": pairs, "train-data": train_data, "tokens": ids, "model": model}
    refs |= {"base-metrics": base_metrics, "trained-metrics": trained_metrics}
    refs["report"] = reporting.report(base_metrics, trained_metrics, refs, decision, settings.dims, data_dir)

    base_scores, trained_scores = stages.read_metrics(base_metrics), stages.read_metrics(trained_metrics)
    summary = {
        "parameters": p,
        "base_model": {"name": base.name, "source": base.source, "location": base.location},
        "miner_model": None if miner is None else {"name": miner.name, "source": miner.source},
        "model_path": str(model.folder / "model"),
        "training": (read_manifest(model.folder) or {}).get("training"),
        "artifacts": {
            step: {"path": r.path, "key": r.key, "rows": r.rows, "cached": r.cached} for step, r in refs.items()
        },
        "metrics": {m: {"base": base_scores[m], "trained": trained_scores[m]} for m in base_scores},
        "evaluation": settings.record(),
        "champion": decision,
    }
    summary["run_record"] = str(reporting.write_run_record(data_dir, summary))
    for metric, pair in summary["metrics"].items():
        log.info("%s: %.4f → %.4f", metric, pair["base"], pair["trained"])
    return summary


FLOW_DEFAULTS = {name: param.default for name, param in inspect.signature(train_embeddings.fn).parameters.items()}

if __name__ == "__main__":
    train_embeddings()
