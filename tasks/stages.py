"""The pipeline's stages as thin Prefect tasks: parent artifacts in, one artifact out.

Only wiring lives here: each stage states what determines its artifact (parameters, parents) and calls
the plain functions of its step that do the work, and shows Prefect what it made. The artifact store is
the cache: a finished artifact with the same key is returned as is (``cached``), a missing or damaged one
is rebuilt. Prefect's own result cache is off (NO_CACHE): it cannot see a deleted file; the store can.
Stage names, versions and file names are the catalog's (``store/catalog.py``); the release path,
shared with the CLI, is ``shipping/release.py``; re-evaluating the champion's way is ``promotion.py``'s.
"""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

import pandas as pd
from prefect import get_run_logger, task
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.cache_policies import NO_CACHE

from tasks import promotion
from tasks.evaluation.data import stsb_pairs
from tasks.evaluation.evaluate import evaluate_model, read_metrics, write_metrics
from tasks.evaluation.settings import EvalSettings
from tasks.models import network
from tasks.models.encoding import load_model
from tasks.models.resolve import ResolvedModel
from tasks.negatives import mining, strategies
from tasks.pairs import labels, sources
from tasks.progress import StageProgress, TrainingProgress
from tasks.report import plots, tables
from tasks.shipping import card, publish, release
from tasks.store import catalog
from tasks.store.artifacts import ArtifactRef, Built, materialize, read_manifest, write_parquet
from tasks.store.catalog import VERSIONS
from tasks.store.runs import RunRecord
from tasks.training import attention, devices, distributed, nodes, tokens
from tasks.training.recipe import TrainRecipe, TrainRuntime
from tasks.training.trainer import train_model


def unless_off(params: dict, **off) -> dict:
    """Leave out settings at their "off" value, so an option added later keeps existing artifacts' keys."""
    return {k: v for k, v in params.items() if not (k in off and v == off[k])}


def _read(ref: ArtifactRef, name: str) -> pd.DataFrame:
    return pd.read_parquet(ref.folder / name)


def _logged(ref: ArtifactRef) -> ArtifactRef:
    done = "cached" if ref.cached else "computed"
    get_run_logger().info("%s/%s: %s (%s rows) at %s", ref.stage, ref.key, done, ref.rows, ref.path)
    return ref


@task(name="load-nli-pairs", cache_policy=NO_CACHE, **network.HUB_RETRIES)  # a hub source downloads
def load_pairs(source: str, max_pairs: int | None, data_dir: str) -> ArtifactRef:
    """Validated rows from the hub (``source`` pinned to a commit by ``sources.pin_source``), a local file or
    a folder: NLI pairs (premise, hypothesis, label), or pairs / triplets (anchor, positive[, negative])."""

    def build(folder) -> Built:
        loaded = sources.load_source(source, max_pairs)
        rows = write_parquet(loaded.frame, folder / catalog.RAW_FILE)
        facts = {"origin": loaded.origin, "kind": loaded.kind, "labels": json.loads(sources.describe_nli(loaded.frame))}
        return Built(rows, facts)

    params = {"source": sources.source_fingerprint(source), "max_pairs": max_pairs}
    return _logged(materialize(data_dir, "raw", VERSIONS["raw"], params, [], build))


@task(name="map-labels", cache_policy=NO_CACHE)
def map_labels(raw: ArtifactRef, loss: str, data_dir: str) -> ArtifactRef:
    """The training format for the loss: softmax 3 labels, cosine 1/0 scores, mnr (anchor, positive)."""

    def build(folder) -> int:
        origin = (read_manifest(raw.folder) or {}).get("origin", raw.path)  # errors name the source's file
        return write_parquet(
            labels.pairs_for_loss(_read(raw, catalog.RAW_FILE), loss, origin), folder / catalog.PAIRS_FILE
        )

    return _logged(materialize(data_dir, "pairs", VERSIONS["pairs"], {"loss": loss}, [raw], build))


@task(name="mine-negatives", cache_policy=NO_CACHE)
def mine_negatives(pairs: ArtifactRef, raw: ArtifactRef, config: strategies.MiningConfig, miner: ResolvedModel | None,
                   data_dir: str) -> ArtifactRef:  # fmt: skip
    """Triplets (or n-tuples) with negatives, a diagnostics table, a sample to eyeball, a histogram."""
    config.check()
    params = unless_off(asdict(config), relative_margin=0.0)
    if config.strategy == "semi-hard":
        assert miner is not None
        params["miner"] = miner.fingerprint

    def build(folder) -> Built:
        progress = StageProgress(f"encoding texts with {miner.name}").update if miner is not None else None
        triplets, facts = mining.mine(_read(pairs, catalog.PAIRS_FILE), labels.as_nli(_read(raw, catalog.RAW_FILE)),
                                      config, miner, data_dir, progress)  # fmt: skip
        if config.strategy == "semi-hard" and "negative_score" in triplets:
            plots.similarity_histogram(triplets, folder / catalog.SIMILARITIES_PLOT)
        write_parquet(triplets.sample(min(200, len(triplets)), random_state=config.seed), folder / catalog.SAMPLE_FILE)
        return Built(write_parquet(triplets, folder / catalog.TRIPLETS_FILE), facts)

    facts = None if miner is None else {"miner_model": asdict(miner)}  # by location: gc keeps a store model that mines
    ref = materialize(data_dir, "triplets", VERSIONS["triplets"], params, [pairs, raw], build, facts=facts)
    diagnostics = (read_manifest(ref.folder) or {}).get("diagnostics", {})
    create_table_artifact(
        key="mining-diagnostics",
        table=[{"measure": k, "value": v} for k, v in diagnostics.items()],
        description=f"negatives: {config.strategy} ({ref.stage}/{ref.key})",
    )
    return _logged(ref)


@task(name="tokenize", cache_policy=NO_CACHE)
def tokenize(data: ArtifactRef, base: ResolvedModel, loss: str, data_dir: str) -> ArtifactRef:
    """Token ids of the training data, made once with the model's own preprocessing (``training/tokens.py``).

    Keyed by its parent, the tokenizer's fingerprint and max_seq_length, so another learning rate or
    epoch count re-uses it, and another tokenizer or length never does.
    """
    model = load_model(base, device="cpu")
    spec = tokens.tokenizer_spec(model)

    def build(folder) -> Built:
        path = data.folder / (catalog.TRIPLETS_FILE if data.stage == "triplets" else catalog.PAIRS_FILE)
        progress = StageProgress(f"tokenizing with {base.name}")
        table = tokens.tokenize_file(path, loss, model, progress=progress.update)  # Arrow columns, never pandas
        tokens.lengths_histogram(table, folder / catalog.LENGTHS_PLOT)
        return Built(tokens.write_tokens(table, folder), {"columns": tokens.describe(table, spec)})

    params = {"tokenizer": spec.fingerprint, "max_seq_length": spec.max_seq_length, "loss": loss}
    facts = {"tokenizer": spec.as_dict(), "base_model": asdict(base)}
    return _logged(materialize(data_dir, "tokens", VERSIONS["tokens"], params, [data], build, facts=facts))


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
    return _logged(ref)


def trained_model(ref: ArtifactRef) -> ResolvedModel:
    return ResolvedModel(f"models/{ref.key}", str(ref.folder / catalog.MODEL_FOLDER), "local", ref.key)


def evaluate_artifact(
    model: ResolvedModel, parents: list[ArtifactRef], settings: EvalSettings, data_dir: str
) -> ArtifactRef:
    """The metrics artifact of ``model`` under ``settings`` (computed once, then served from the store)."""

    def build(folder) -> int:
        progress = StageProgress(f"evaluating {model.name}")
        loaded = load_model(model, precision=settings.precision)
        metrics = evaluate_model(loaded, settings, folder, progress.update, resolved=model)  # resolved: for a cluster
        return write_metrics(folder, metrics, settings.dims)

    params = {"model": model.fingerprint, "limit": settings.limit, "tasks": list(settings.tasks)}
    params["dims"] = list(settings.dims)
    params["data"] = settings.fingerprints  # a changed file or pinned revision is evaluated again
    if settings.effective_precision != "fp32":  # scores in half precision (asked for, on a GPU): their own
        params["precision"] = settings.effective_precision.value
    facts = {"model": asdict(model), "evaluation": settings.record()}
    return materialize(data_dir, "metrics", VERSIONS["metrics"], params, parents, build, facts=facts)


@task(name="evaluate-model", cache_policy=NO_CACHE)
def evaluate(model: ResolvedModel, parents: list[ArtifactRef], settings: EvalSettings, data_dir: str) -> ArtifactRef:
    """STS-B validation/test Spearman (at each Matryoshka dimension) and the MTEB tasks' main scores,
    as metrics.json and metrics.parquet."""
    return _logged(evaluate_artifact(model, parents, settings, data_dir))


@task(name="promote-champion", cache_policy=NO_CACHE)
def promote(
    model: ArtifactRef, metrics: ArtifactRef, settings: EvalSettings, metric: str, min_gain: float, data_dir: str
) -> promotion.Promotion:
    """Make the trained model the champion only if it beats the current one on ``metric``, evaluated alike,
    by at least ``min_gain`` and, on STS-B, with a paired bootstrap interval of the gain above zero."""

    def the_champions_way(theirs: EvalSettings) -> tuple[dict[str, float], Path]:
        get_run_logger().info("re-evaluating %s the champion's way: %s", model.key, theirs.record())
        ref = evaluate_artifact(trained_model(model), [model], theirs, data_dir)
        return read_metrics(ref.folder), ref.folder / catalog.STSB_PAIRS_FILE

    outcome = promotion.challenge(data_dir, model, read_metrics(metrics.folder), metric, settings.record(),
                                  promotion.reevaluation(the_champions_way), min_gain=min_gain,
                                  pairs=metrics.folder / catalog.STSB_PAIRS_FILE)  # fmt: skip
    get_run_logger().info("champion on %s: %s", metric, outcome.decision["reason"])
    return outcome


@task(name="report", cache_policy=NO_CACHE)
def report(record: RunRecord, champion: dict | None, dims: tuple[int, ...], data_dir: str) -> ArtifactRef:
    """Comparison table and picture (an artifact), score against dimension for Matryoshka runs, plus
    Prefect table and markdown artifacts; ``champion``: the champion's record after this run's decision."""
    runs = record.artifacts
    base, trained = read_metrics(runs.base_metrics.folder), read_metrics(runs.trained_metrics.folder)
    table = tables.comparison(base, trained, (champion or {}).get("metrics", trained))

    def build(folder) -> int:
        return tables.write_report(folder, table, base, trained, dims)

    ref = materialize(data_dir, "reports", VERSIONS["reports"], {}, [runs.base_metrics, runs.trained_metrics], build)
    create_table_artifact(
        key="train-embeddings-metrics",
        table=table.round(4).to_dict(orient="records"),
        description="STS-B Spearman (cosine) and the MTEB tasks' main scores: base, trained, champion",
    )
    create_markdown_artifact(
        key="train-embeddings-lineage",
        markdown=tables.lineage_markdown(runs.named() | {"report": ref}, record.champion),
        description="artifacts of this run and the champion decision",
    )
    return ref


@task(name="release-model", cache_policy=NO_CACHE)
def release_model(
    record: RunRecord, champion: dict | None, formats: tuple[str, ...], settings: EvalSettings | None, data_dir: str
) -> release.Shipment:
    """The exports asked for, each measured against the model (``settings``; None: not measured), and the
    release folder: the model, its card (lineage) and the exports that kept their scores."""
    model = record.artifacts.model
    lineage = card.lineage_from_run(record, champion)
    shipment = release.ship(trained_model(model), formats, lineage, data_dir, settings, [model])
    for fmt, ref in shipment.exports.items():
        _logged(ref)
        if fmt in shipment.left_out:
            get_run_logger().warning("export %s left out of the release: its scores moved beyond its tolerance", fmt)
    if shipment.comparison is not None:
        table = (_logged(shipment.comparison).folder / catalog.COMPARISON_MARKDOWN).read_text()
        about = "each export against the PyTorch model: scores, CPU speed, size"
        create_markdown_artifact(key="train-embeddings-exports", markdown=table, description=about)
    create_markdown_artifact(key="train-embeddings-model-card", markdown=(shipment.folder / card.CARD).read_text(),
                             description="the model card of this run's model")  # fmt: skip
    _logged(shipment.release)
    return shipment


@task(name="push-to-hub", cache_policy=NO_CACHE, **network.HUB_RETRIES)
def push(shipment: release.Shipment, model: ArtifactRef, champion: dict | None, repo: str, private: bool,
         token_block: str, data_dir: str) -> str | None:  # fmt: skip
    """Publish the release when its model is the champion and has not been published to ``repo`` yet: each new
    champion once, and one whose push failed by the next run. The token goes nowhere but the request header."""
    log = get_run_logger()
    why_not = publish.why_not_push(data_dir, repo, model.key, champion)
    if why_not:
        log.info("not pushed to %s: %s", repo, why_not)
        return None
    url = publish.publish_release(shipment.folder, data_dir, repo, model.key, shipment.release.key, private=private,
                                  token=publish.hub_token(token_block))  # fmt: skip
    log.info("pushed %s to %s: %s", shipment.release.key, repo, url)
    return url
