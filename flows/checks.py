"""The flow's checks before any work: every parameter, then the pinned sources' columns.

Each fails in seconds, naming the parameter and the value, before any data is read or model loaded; the
sources' columns are checked once they are pinned (at the commit their rows will be read from).
"""

from __future__ import annotations

from tasks.evaluation import retrieval
from tasks.evaluation.settings import EvalSettings
from tasks.models.resolve import check_dims, embedding_dimension, hub_reachable, resolve_model
from tasks.negatives.strategies import MiningConfig
from tasks.pairs import sources
from tasks.pairs.labels import LOSSES, RANKING
from tasks.promotion import check_min_gain
from tasks.recipes import Choices
from tasks.shipping import publish
from tasks.training.distributed import training_processes
from tasks.training.recipe import TrainRecipe, TrainRuntime


def check_settings(chosen: Choices, max_pairs: int | None, mining: MiningConfig, recipe: TrainRecipe,
                   runtime: TrainRuntime, settings: EvalSettings, promote_metric: str,
                   min_gain: float, push_to_hub: str | None = None, token_block: str = "hf-token",
                   held_out: bool = False) -> None:  # fmt: skip
    """Fail before any data is read or model loaded, naming the parameter (``check_source`` then checks the
    source's columns, once it is pinned). ``held_out``: the run holds out a split (eval_holdout, eval_source)."""
    if chosen.loss not in LOSSES:
        raise ValueError(f"parameter loss: {chosen.loss!r} is not one of {LOSSES}")
    if chosen.loss not in RANKING and mining.strategy != "none":
        raise ValueError(
            f"parameter negatives: {mining.strategy!r} applies to losses {RANKING} only; "
            f"use 'none' with {chosen.loss!r}"
        )
    mining.check()
    recipe.check()
    runtime.check()
    recipe.per_device_batch(training_processes(runtime), runtime.nodes)
    if max_pairs is not None and max_pairs < 1:
        raise ValueError(f"parameter max_pairs: must be positive or None, got {max_pairs}")
    settings.check(hub_reachable)
    metrics = settings.metric_names() + (retrieval.metric_names(settings.dims) if held_out else [])
    if promote_metric.startswith(retrieval.PREFIX) and not held_out:
        raise ValueError(f"parameter promote_metric: {promote_metric!r} is scored on a held-out split, and this run "
                         "holds none out: set eval_holdout (say 0.05) or eval_source")  # fmt: skip
    if promote_metric not in metrics:
        raise ValueError(f"parameter promote_metric: {promote_metric!r} is not one of {metrics}")
    check_min_gain(min_gain)
    if push_to_hub:  # offline, or without a token, nothing would be uploaded: say so now rather than after training
        try:  # the token is only checked here: the push task reads it again (a task's arguments are recorded)
            publish.ready_to_push(push_to_hub, token_block)
        except publish.PublishError as exc:
            message = str(exc).removeprefix("--repo: ")
            raise ValueError(f"parameter push_to_hub: {message}; run without push_to_hub, or push later with "
                             "`train-embeddings push`") from None  # fmt: skip
    if recipe.matryoshka_dims or settings.dims:  # against the base model's dimension, read from its folder
        dimension = embedding_dimension(resolve_model(chosen.base_model).location)
        recipe.check_matryoshka(dimension)
        check_dims(settings.dims, dimension, "eval_dims")


def check_source(source: str, loss: str, negatives: str) -> None:
    """The pinned source's columns (from its schema or header, not its rows) fit the loss: read at the commit
    the run will read its rows from."""
    sources.check_loss_fits(sources.source_columns(source), loss, negatives, source=source)


def check_eval_source(source: str) -> None:
    """``eval_source`` holds pairs to retrieve: NLI rows (its entailed ones) or anchor/positive columns."""
    columns = sources.source_columns(source)
    needed = sources.NLI_COLUMNS if sources.kind_of(columns) == "nli" else sources.PAIR_COLUMNS
    missing = [c for c in needed if c not in columns]
    if missing:
        raise ValueError(f"parameter eval_source: {source} has columns {list(columns)}, without {missing}"
                         f"{sources.EXPECTED}")  # fmt: skip
