"""The model stages: training, evaluation, and the champion decision."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from tasks import promotion
from tasks.evaluation.data import stsb_pairs
from tasks.evaluation.evaluate import Encode, evaluate_model, read_metrics, write_metrics
from tasks.evaluation.settings import EvalSettings
from tasks.models.encoding import load_model
from tasks.models.resolve import ResolvedModel
from tasks.negatives.embeddings import encode_cached
from tasks.pairs import holdout
from tasks.progress import StageProgress, TrainingProgress
from tasks.stages.common import logged, unless_off
from tasks.store import catalog
from tasks.store.artifacts import ArtifactRef, Built, find, materialize
from tasks.store.catalog import VERSIONS
from tasks.training import attention, devices, distributed, nodes, tokens
from tasks.training.recipe import TrainRecipe, TrainRuntime
from tasks.training.trainer import train_model


def model_key_params(
    base: ResolvedModel, recipe: TrainRecipe, runtime: TrainRuntime, guide: ResolvedModel | None
) -> dict:
    """What decides the trained weights: the base model, the recipe with the precision that really runs
    here (the CPU trains fp32 whatever is asked), GIST's guide, and (only when it is so) that an attention
    kernel asked for by name leaves the model's attention dropout out. Nothing else of the runtime."""
    params = {"base_model": base.fingerprint, **unless_off(asdict(recipe), matryoshka_dims=())}
    params["precision"] = nodes.trains_as(recipe.precision, runtime).mixed_precision  # here, or on the nodes
    if attention.attention_dropout_of(base.location) > 0 and not attention.applies_attention_dropout(runtime.attention):
        params["attention_dropout"] = False
    if guide is not None:
        params["guide"] = guide.fingerprint
    return params


@task(name="train-model", cache_policy=NO_CACHE)
def train(
    data: ArtifactRef,
    base: ResolvedModel,
    recipe: TrainRecipe,
    runtime: TrainRuntime,
    data_dir: str,
    guide: ResolvedModel | None = None,
) -> ArtifactRef:
    """A sentence-transformers model trained on the tokens stage's ids by the recipe (``guide``:
    GISTEmbedLoss's guide model); keyed by the recipe only, so a runtime change is served from the store."""
    guide_location = None if guide is None else guide.location

    def build(folder) -> Built:
        device = devices.device_name() if runtime.nodes == 1 else f"{runtime.nodes} nodes × {runtime.processes}"
        get_run_logger().info("training %s with %s loss on %s", base.name, recipe.loss, device)
        ids, sts = tokens.read_tokens(data.folder), stsb_pairs("validation")
        with nodes.training_slot(device, runtime):  # one training at a time on a GPU machine; data stages never wait
            if distributed.training_processes(runtime) > 1:  # torchrun: here, or across encode_cluster's nodes
                summary = nodes.train_launched(base.location, ids, sts, recipe, runtime, folder, guide_location)
            else:
                progress = TrainingProgress(f"training {recipe.loss} on {device}")
                summary = train_model(base.location, ids, sts, recipe, runtime, folder, [progress], guide_location)
        get_run_logger().info("trained %(steps)s steps on %(device)s: %(samples_per_second)s samples/s, "
                              "%(tokens_per_second)s tokens/s, %(padded_tokens_per_real)sx padded tokens, MFU %(mfu)s",
                              summary)  # fmt: skip
        return Built(summary["rows"], {"training": {k: v for k, v in summary.items() if k != "log_history"}})

    params = model_key_params(base, recipe, runtime, guide)
    facts = {"base_model": asdict(base), "guide_model": None if guide is None else asdict(guide)}
    ref = materialize(data_dir, "models", VERSIONS["models"], params, [data], build, facts=facts, resumable=True)
    return logged(ref)


def trained_model(ref: ArtifactRef) -> ResolvedModel:
    return ResolvedModel(f"models/{ref.key}", str(ref.folder / catalog.MODEL_FOLDER), "local", ref.key)


def evaluate_artifact(
    model: ResolvedModel, parents: list[ArtifactRef], settings: EvalSettings, data_dir: str
) -> ArtifactRef:
    """The metrics artifact of ``model`` under ``settings`` (computed once, then served from the store)."""

    held_out = None if settings.holdout is None else held_out_split(settings.holdout, data_dir)

    def build(folder) -> Built:
        progress = StageProgress(f"evaluating {model.name}")
        loaded = load_model(model, precision=settings.precision)
        retrieval = None if held_out is None else holdout.read_retrieval(held_out.folder)
        metrics = evaluate_model(loaded, settings, folder, progress.update, resolved=model,  # resolved: for a cluster
                                 retrieval=retrieval, cached=cached_encoder(model, settings, data_dir))  # fmt: skip
        sizes = {} if retrieval is None else {"holdout": retrieval.sizes()}
        return Built(write_metrics(folder, metrics, settings.dims), sizes)

    params = {"model": model.fingerprint, "limit": settings.limit, "tasks": list(settings.tasks)}
    params["dims"] = list(settings.dims)
    params["data"] = settings.fingerprints  # a changed file or pinned revision is evaluated again
    if settings.effective_precision != "fp32":  # scores in half precision (asked for, on a GPU): their own
        params["precision"] = settings.effective_precision.value
    if held_out is not None:  # only then: metrics from before the split keep their keys
        params["holdout"], parents = held_out.key, [*parents, held_out]
    facts = {"model": asdict(model), "evaluation": settings.record()}
    return materialize(data_dir, "metrics", VERSIONS["metrics"], params, parents, build, facts=facts)


def held_out_split(key: str, data_dir: str) -> ArtifactRef:
    """The held-out split ``holdout/<key>`` this run made (or found), which its evaluations read."""
    found = find(data_dir, "holdout", key)
    if found is None:
        raise RuntimeError(f"the held-out split holdout/{key} is not in {data_dir}")
    return found


def cached_encoder(model: ResolvedModel, settings: EvalSettings, data_dir: str) -> Encode:
    """The held-out set's texts through the embedding cache, in the evaluation's precision: the distractors are
    encoded once per model (the base model's often by mining already)."""
    return lambda texts: encode_cached(data_dir, model, texts, precision=settings.effective_precision)[0]


@task(name="evaluate-model", cache_policy=NO_CACHE)
def evaluate(model: ResolvedModel, parents: list[ArtifactRef], settings: EvalSettings, data_dir: str) -> ArtifactRef:
    """STS-B validation/test Spearman (at each Matryoshka dimension) and the MTEB tasks' main scores,
    as metrics.json and metrics.parquet."""
    return logged(evaluate_artifact(model, parents, settings, data_dir))


def scored(metrics: ArtifactRef) -> tuple[dict[str, float], Path, Path]:
    """A metrics artifact's scores and the files its bootstrap resamples: STS-B's per-pair, held-out per-query."""
    folder = metrics.folder
    return read_metrics(folder), folder / catalog.STSB_PAIRS_FILE, folder / catalog.HOLDOUT_QUERIES_FILE


@task(name="promote-champion", cache_policy=NO_CACHE)
def promote(
    model: ArtifactRef, metrics: ArtifactRef, settings: EvalSettings, metric: str, min_gain: float, data_dir: str
) -> promotion.Promotion:
    """Make the trained model the champion only if it beats the current one on ``metric``, evaluated alike,
    by at least ``min_gain`` and, on STS-B and held-out metrics, with a paired bootstrap interval of the gain
    above zero. On a held-out split the champion was not scored on, the champion is scored on it first."""

    def the_champions_way(theirs: EvalSettings) -> tuple[dict[str, float], Path, Path]:
        get_run_logger().info("re-evaluating %s the champion's way: %s", model.key, theirs.record())
        if theirs.holdout is not None and find(data_dir, "holdout", theirs.holdout) is None:
            raise promotion.CannotCompare(f"the champion was scored on the held-out split holdout/{theirs.holdout}, "
                                          "which is no longer in the store")  # fmt: skip
        return scored(evaluate_artifact(trained_model(model), [model], theirs, data_dir))

    def the_champion_on(champion: dict, record: dict) -> tuple[dict[str, float], Path, Path]:
        """The champion scored on this run's held-out split (its model is in the store: gc keeps it)."""
        get_run_logger().info("re-evaluating the champion %s on holdout/%s", champion["model_key"], record["holdout"])
        found = find(data_dir, "models", champion["model_key"])  # on a URL store: pulled into the mirror
        if found is None:
            raise promotion.CannotCompare(f"the champion's model models/{champion['model_key']} is not in the store")
        return scored(evaluate_artifact(trained_model(found), [found], settings, data_dir))

    scores, pairs, queries = scored(metrics)
    outcome = promotion.challenge(data_dir, model, scores, metric, settings.record(),
                                  promotion.reevaluation(the_champions_way), min_gain=min_gain, pairs=pairs,
                                  queries=queries, champion_on=the_champion_on)  # fmt: skip
    get_run_logger().info("champion on %s: %s", metric, outcome.decision["reason"])
    return outcome
