"""The pipeline's stages as thin Prefect tasks: parent artifacts in, one artifact out.

Each stage only states what determines its artifact (parameters, parents, a version to bump when
its code changes meaning) and calls the plain functions of its step (``pairs``, ``negatives``,
``training``, ``evaluation``, ``report``) that do the work; each build returns what it made. The
artifact store is the cache: a finished artifact with the same key is returned as is (``cached``),
a missing or damaged one is rebuilt, so a deleted file never crashes a re-run. Prefect's own result
cache is off (NO_CACHE) because it cannot see a deleted file; the store can.

(Over 300 lines because it is the one place where every stage's key is stated: splitting it would
scatter what a reader checks together.)
"""

from __future__ import annotations

import hashlib
import json
import shutil
from dataclasses import asdict
from pathlib import Path

import pandas as pd
from prefect import get_run_logger, task
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.cache_policies import NO_CACHE

from tasks import promotion
from tasks.evaluation.bootstrap import PAIRS_FILE
from tasks.evaluation.data import evaluation_texts, stsb_pairs
from tasks.evaluation.evaluate import evaluate_model, metrics_table
from tasks.evaluation.settings import EvalSettings
from tasks.models.encoding import load_model
from tasks.models.resolve import ResolvedModel
from tasks.negatives import strategies
from tasks.pairs import labels, sources
from tasks.progress import StageProgress, TrainingProgress
from tasks.report import plots, tables
from tasks.shipping import card, compare, exports, publish
from tasks.store import champion, environment
from tasks.store.artifacts import ArtifactRef, Built, materialize, read_manifest, write_parquet
from tasks.training import distributed, hardware, tokens
from tasks.training.recipe import TrainRecipe, TrainRuntime
from tasks.training.trainer import train_model

# Bump a stage's version when its code changes what it writes: its key and those downstream move.
VERSIONS = {
    "raw": 1,
    "pairs": 1,
    "triplets": 2,
    "tokens": 1,
    "models": 3,
    "metrics": 3,
    "reports": 1,
    "exports": 1,
    "releases": 1,
    "comparisons": 1,
}


def unless_off(params: dict, **off) -> dict:
    """Leave out settings at their "off" value, so an option added later keeps existing artifacts' keys."""
    return {k: v for k, v in params.items() if not (k in off and v == off[k])}


def _read(ref: ArtifactRef, name: str) -> pd.DataFrame:
    return pd.read_parquet(ref.folder / name)


def _logged(ref: ArtifactRef) -> ArtifactRef:
    get_run_logger().info(
        "%s/%s: %s (%s rows) at %s", ref.stage, ref.key, "cached" if ref.cached else "computed", ref.rows, ref.path
    )
    return ref


@task(name="load-nli-pairs", cache_policy=NO_CACHE)
def load_pairs(source: str, max_pairs: int | None, data_dir: str) -> ArtifactRef:
    """Validated rows from the hub (``source`` pinned to a commit by ``sources.pin_source``), a local file or
    a folder: NLI pairs (premise, hypothesis, label), or pairs / triplets (anchor, positive[, negative])."""

    def build(folder) -> Built:
        loaded = sources.load_source(source, max_pairs)
        rows = write_parquet(loaded.frame, folder / "pairs.parquet")
        facts = {"origin": loaded.origin, "kind": loaded.kind, "labels": json.loads(sources.describe_nli(loaded.frame))}
        return Built(rows, facts)

    params = {"source": sources.source_fingerprint(source), "max_pairs": max_pairs}
    return _logged(materialize(data_dir, "raw", VERSIONS["raw"], params, [], build))


@task(name="map-labels", cache_policy=NO_CACHE)
def map_labels(raw: ArtifactRef, loss: str, data_dir: str) -> ArtifactRef:
    """The training format for the loss: softmax 3 labels, cosine 1/0 scores, mnr (anchor, positive)."""

    def build(folder) -> int:
        return write_parquet(labels.pairs_for_loss(_read(raw, "pairs.parquet"), loss), folder / "pairs.parquet")

    return _logged(materialize(data_dir, "pairs", VERSIONS["pairs"], {"loss": loss}, [raw], build))


@task(name="mine-negatives", cache_policy=NO_CACHE)
def mine_negatives(
    pairs: ArtifactRef,
    raw: ArtifactRef,
    config: strategies.MiningConfig,
    miner: ResolvedModel | None,
    data_dir: str,
) -> ArtifactRef:
    """Triplets (or n-tuples) with negatives, a diagnostics table, a sample to eyeball, a histogram."""
    config.check()
    params = unless_off(asdict(config), relative_margin=0.0)
    if config.strategy == "semi-hard":
        assert miner is not None
        params["miner"] = miner.fingerprint

    def build(folder) -> Built:
        mnr, raw_pairs = _read(pairs, "pairs.parquet"), labels.as_nli(_read(raw, "pairs.parquet"))
        facts: dict = {}
        if config.strategy == "soft":
            triplets = strategies.soft_negatives(mnr, raw_pairs, config)
        elif config.strategy == "contradiction":
            triplets = strategies.contradiction_negatives(mnr, raw_pairs, config)
        else:
            progress = StageProgress(f"encoding texts with {miner.name}")
            triplets, search = strategies.mine_semi_hard(mnr, raw_pairs, miner, data_dir, config, progress.update)
            facts = {"miner": asdict(miner), "encoded_texts": search.pop("encoded_texts"), "search": search}
            if len(triplets) and "negative_score" in triplets:
                plots.similarity_histogram(triplets, folder / "similarities.png")
        if triplets.empty:
            raise ValueError(f"negatives={config.strategy!r} found no negative for any of {len(mnr)} pairs")
        facts["diagnostics"] = strategies.diagnostics(mnr, triplets, config) | facts.get("search", {})
        write_parquet(triplets.sample(min(200, len(triplets)), random_state=config.seed), folder / "sample.parquet")
        return Built(write_parquet(triplets, folder / "triplets.parquet"), facts)

    ref = materialize(data_dir, "triplets", VERSIONS["triplets"], params, [pairs, raw], build)
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
        frame = _read(data, "triplets.parquet" if data.stage == "triplets" else "pairs.parquet")
        progress = StageProgress(f"tokenizing with {base.name}")
        table = tokens.tokenize_frame(frame, loss, model, progress=progress.update)
        tokens.lengths_histogram(table, folder / "lengths.png")
        return Built(tokens.write_tokens(table, folder), {"columns": tokens.describe(table, spec)})

    params = {"tokenizer": spec.fingerprint, "max_seq_length": spec.max_seq_length, "loss": loss}
    facts = {"tokenizer": spec.as_dict(), "base_model": asdict(base)}
    return _logged(materialize(data_dir, "tokens", VERSIONS["tokens"], params, [data], build, facts=facts))


def read_tokens(ref: ArtifactRef) -> tokens.TokenizedData:
    return tokens.read_tokens(ref.folder, read_manifest(ref.folder) or {})


def model_key_params(
    base: ResolvedModel, recipe: TrainRecipe, runtime: TrainRuntime, guide: ResolvedModel | None
) -> dict:
    """What decides the trained weights: the base model, the recipe with the precision that really runs
    here (the CPU trains fp32 whatever is asked), GIST's guide, and (only when it is so) that an attention
    kernel asked for by name leaves the model's attention dropout out. Nothing else of the runtime."""
    params = {"base_model": base.fingerprint, **unless_off(asdict(recipe), matryoshka_dims=())}
    params["precision"] = hardware.mixed_precision(recipe.precision)
    if hardware.attention_dropout_of(base.location) > 0 and not hardware.applies_attention_dropout(runtime.attention):
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
        device = hardware.device_name()
        get_run_logger().info("training %s with %s loss on %s", base.name, recipe.loss, device)
        ids, sts = read_tokens(data), stsb_pairs("validation")
        if distributed.processes_for(runtime) > 1:
            summary = distributed.train_distributed(base.location, ids, sts, recipe, runtime, folder, guide_location)
        else:
            progress = TrainingProgress(f"training {recipe.loss} on {device}")
            summary = train_model(base.location, ids, sts, recipe, runtime, folder, [progress], guide_location)
        get_run_logger().info(
            "trained %s steps on %s: %s samples/s, %s tokens/s, %sx padded tokens, MFU %s",
            summary["steps"],
            summary["device"],
            summary["samples_per_second"],
            summary["tokens_per_second"],
            summary["padded_tokens_per_real"],
            summary["mfu"],
        )
        return Built(summary["rows"], {"training": {k: v for k, v in summary.items() if k != "log_history"}})

    params = model_key_params(base, recipe, runtime, guide)
    facts = {"base_model": asdict(base), "guide_model": None if guide is None else asdict(guide)}
    ref = materialize(data_dir, "models", VERSIONS["models"], params, [data], build, facts=facts, resumable=True)
    return _logged(ref)


def trained_model(ref: ArtifactRef) -> ResolvedModel:
    return ResolvedModel(f"models/{ref.key}", str(ref.folder / "model"), "local", ref.key)


def evaluate_artifact(
    model: ResolvedModel, parents: list[ArtifactRef], settings: EvalSettings, data_dir: str
) -> ArtifactRef:
    """The metrics artifact of ``model`` under ``settings`` (computed once, then served from the store)."""

    def build(folder) -> int:
        progress = StageProgress(f"evaluating {model.name}")
        metrics = evaluate_model(load_model(model, precision=settings.precision), settings, folder, progress.update)
        (folder / "metrics.json").write_text(json.dumps(metrics, indent=2))
        return write_parquet(metrics_table(metrics, settings.dims), folder / "metrics.parquet")

    params = {"model": model.fingerprint, "limit": settings.limit, "tasks": list(settings.tasks)}
    params["dims"] = list(settings.dims)
    params["data"] = settings.fingerprints  # a changed file or pinned revision is evaluated again
    if settings.effective_precision != "fp32":  # scores in half precision (asked for, on a GPU): their own
        params["precision"] = settings.effective_precision
    facts = {"model": asdict(model), "evaluation": settings.record()}
    return materialize(data_dir, "metrics", VERSIONS["metrics"], params, parents, build, facts=facts)


@task(name="evaluate-model", cache_policy=NO_CACHE)
def evaluate(model: ResolvedModel, parents: list[ArtifactRef], settings: EvalSettings, data_dir: str) -> ArtifactRef:
    """STS-B validation/test Spearman (at each Matryoshka dimension) and the MTEB tasks' main scores,
    as metrics.json and metrics.parquet."""
    return _logged(evaluate_artifact(model, parents, settings, data_dir))


def read_metrics(ref: ArtifactRef) -> dict[str, float]:
    return json.loads((ref.folder / "metrics.json").read_text())


def reevaluator(model: ArtifactRef, data_dir: str):
    """Scores of ``model`` under a champion's recorded settings, when its evaluation data is still the same."""

    def reevaluate(record: dict) -> tuple[dict[str, float], Path]:
        settings = EvalSettings.from_record(record)
        try:
            now = settings.fingerprints
        except ValueError as exc:
            raise promotion.CannotCompare(f"the champion's evaluation cannot be repeated: {exc}") from exc
        if settings.effective_precision != record.get("precision", "fp32"):
            raise promotion.CannotCompare(
                f"the champion was evaluated in {record.get('precision', 'fp32')}, which this machine encodes in "
                f"{settings.effective_precision}"
            )
        changed = sorted(k for k in record.get("data", {}) if record["data"][k] != now.get(k))
        if changed:
            raise promotion.CannotCompare(
                f"the champion was evaluated on other data for {changed} than this checkout has"
            )
        get_run_logger().info("re-evaluating %s the champion's way: %s", model.key, record)
        ref = evaluate_artifact(trained_model(model), [model], settings, data_dir)
        return read_metrics(ref), ref.folder / PAIRS_FILE

    return reevaluate


@task(name="promote-champion", cache_policy=NO_CACHE)
def promote(
    model: ArtifactRef, metrics: ArtifactRef, settings: EvalSettings, metric: str, min_gain: float, data_dir: str
) -> dict:
    """Make the trained model the champion only if it beats the current one on ``metric``, evaluated alike,
    by at least ``min_gain`` and, on STS-B, with a paired bootstrap interval of the gain above zero."""
    decision = promotion.promote_if_better(
        data_dir,
        model,
        read_metrics(metrics),
        metric,
        settings.record(),
        reevaluator(model, data_dir),
        min_gain=min_gain,
        pairs=metrics.folder / PAIRS_FILE,
    )
    get_run_logger().info("champion on %s: %s", metric, decision["reason"])
    return decision


@task(name="report", cache_policy=NO_CACHE)
def report(
    base_metrics: ArtifactRef,
    trained_metrics: ArtifactRef,
    refs: dict[str, ArtifactRef],
    decision: dict,
    dims: tuple[int, ...],
    data_dir: str,
) -> ArtifactRef:
    """Comparison table and picture (an artifact), score against dimension for Matryoshka runs, plus
    Prefect table and markdown artifacts."""
    base, trained = read_metrics(base_metrics), read_metrics(trained_metrics)
    current = champion.read_champion(data_dir) or {}
    table = tables.comparison(base, trained, current.get("metrics", trained))

    def build(folder) -> int:
        plots.metric_comparison(table[~table["metric"].str.contains("_dim")], folder / "comparison.png")
        if dims:
            curve = tables.by_dimension(base, trained, dims)
            plots.dimension_curve(curve, folder / "dimensions.png")
            write_parquet(curve, folder / "dimensions.parquet")
        return write_parquet(table.drop(columns=["champion"]), folder / "comparison.parquet")

    ref = materialize(data_dir, "reports", VERSIONS["reports"], {}, [base_metrics, trained_metrics], build)
    create_table_artifact(
        key="train-embeddings-metrics",
        table=table.round(4).to_dict(orient="records"),
        description="STS-B Spearman (cosine) and the MTEB tasks' main scores: base, trained, champion",
    )
    create_markdown_artifact(
        key="train-embeddings-lineage",
        markdown=tables.lineage_markdown(refs | {"report": ref}, decision),
        description="artifacts of this run and the champion decision",
    )
    return ref


def export_artifact(model: ResolvedModel, fmt: str, data_dir: str, parents: list[ArtifactRef] = ()) -> ArtifactRef:
    """``model`` in one serving format (``exports.FORMATS``), as an export folder under ``model/``; keyed by the
    model's weights, the format and the exporting libraries' versions."""
    spec = exports.FORMATS[exports.check_formats([fmt], "format")[0]]

    def build(folder) -> Built:
        record = exports.export_model(Path(model.location), fmt, folder / "model", scratch=folder / ".scratch")
        shutil.rmtree(folder / ".scratch", ignore_errors=True)
        return Built(None, {"export": record})

    versions = {name: (v or "").split("+")[0] or None for name, v in environment.versions(spec.libraries).items()}
    params = {"model": model.fingerprint, "format": fmt, "libraries": versions}  # +cpu / +cu128 build the same
    return materialize(data_dir, "exports", VERSIONS["exports"], params, list(parents), build,
                       facts={"model": asdict(model)})  # fmt: skip


@task(name="export-model", cache_policy=NO_CACHE)
def export(model: ArtifactRef, fmt: str, data_dir: str) -> ArtifactRef:
    """The trained model in one serving format."""
    return _logged(export_artifact(trained_model(model), fmt, data_dir, [model]))


def lineage_of(summary: dict, data_dir: str) -> dict:
    """The model card's facts from a run record: the model's environment and the source's identity are read
    from the model and pairs artifacts' manifests."""
    found = summary.get("artifacts") or {}
    model_manifest = read_manifest(Path(found.get("model", {}).get("path", "/nonexistent"))) or {}
    raw_manifest = read_manifest(Path(found.get("pairs", {}).get("path", "/nonexistent"))) or {}
    return card.lineage_from_run(
        summary,
        model_manifest.get("environment"),
        raw_manifest.get("params", {}).get("source"),
        champion.read_champion(data_dir),
    )


def release_artifact(
    model: ResolvedModel, lineage: dict, shipped: dict[str, ArtifactRef], data_dir: str, parents: list[ArtifactRef] = ()
) -> ArtifactRef:
    """One folder to serve or publish, ``model/``: the model, its card (README.md with the lineage,
    lineage.json) and the exports asked for, where sentence-transformers looks for them (static: ``static/``)."""

    def build(folder) -> Built:
        out = folder / "model"
        exports.copy_model_files(Path(model.location), out, weights=True, link=True)
        for fmt, ref in shipped.items():
            source = ref.folder / "model"
            if fmt == "static":
                shutil.copytree(source, out / "static", copy_function=exports.link_or_copy)
                continue
            for path in (source / exports.FORMATS[fmt].file).parent.iterdir():
                (out / path.parent.name).mkdir(exist_ok=True)
                exports.link_or_copy(path, out / path.parent.name / path.name)
        card.write_card(Path(model.location), out, lineage, list(shipped))
        return Built(None, {"formats": list(shipped)})

    lineage_hash = hashlib.sha256(json.dumps(lineage, sort_keys=True, default=str).encode()).hexdigest()[:16]
    params = {"model": model.fingerprint, "lineage": lineage_hash, "exports": {f: r.key for f, r in shipped.items()}}
    refs = [*parents, *shipped.values()]
    return materialize(data_dir, "releases", VERSIONS["releases"], params, refs, build, facts={"lineage": lineage})


@task(name="release-model", cache_policy=NO_CACHE)
def release(model: ArtifactRef, summary: dict, shipped: dict[str, ArtifactRef], data_dir: str) -> ArtifactRef:
    """The trained model with its card and exports, ready to serve or publish."""
    ref = _logged(release_artifact(trained_model(model), lineage_of(summary, data_dir), shipped, data_dir, [model]))
    create_markdown_artifact(key="train-embeddings-model-card", markdown=(ref.folder / "model" / card.CARD).read_text(),
                             description="the model card of this run's model")  # fmt: skip
    return ref


@task(name="compare-exports", cache_policy=NO_CACHE)
def compare_exports(model: ArtifactRef, shipped: dict[str, ArtifactRef], settings: EvalSettings,
                    data_dir: str) -> ArtifactRef:  # fmt: skip
    """Every export against the PyTorch model: scores, CPU speed, load time, size (a table and a picture)."""

    def build(folder) -> int:
        texts = evaluation_texts()
        texts = texts[:: max(1, len(texts) // 4000)]  # every n-th: about 4,000 texts of every kind
        table = compare.compare_formats(model.folder / "model", {f: r.folder / "model" for f, r in shipped.items()},
                                        settings, texts, folder / "evaluation")  # fmt: skip
        (folder / "comparison.md").write_text(compare.markdown(table))
        plots.format_comparison(table, folder / "comparison.png")
        return write_parquet(table, folder / "comparison.parquet")

    params = {"settings": settings.record(), "exports": {f: r.key for f, r in shipped.items()}}
    ref = _logged(materialize(data_dir, "comparisons", VERSIONS["comparisons"], params, [model, *shipped.values()],
                              build))  # fmt: skip
    create_markdown_artifact(key="train-embeddings-exports", markdown=(ref.folder / "comparison.md").read_text(),
                             description="each export against the PyTorch model: scores, CPU speed, size")  # fmt: skip
    return ref


@task(name="push-to-hub", cache_policy=NO_CACHE)
def push(release_ref: ArtifactRef, model: ArtifactRef, repo: str, private: bool, token_block: str,
         data_dir: str) -> str | None:  # fmt: skip
    """Publish the release when its model is the champion and has not been published to ``repo`` yet: each new
    champion once, and one whose push failed by the next run. The token goes nowhere but the request header."""
    log = get_run_logger()
    current = champion.read_champion(data_dir) or {}
    if current.get("model_key") != model.key:
        log.info("not pushed to %s: %s is not the champion", repo, model.key)
        return None
    done = publish.read_pushed(data_dir, repo) or {}
    if done.get("model_key") == model.key:
        log.info("not pushed to %s: the champion %s is published already (%s)", repo, model.key, done.get("url"))
        return None
    url = publish.push_folder(release_ref.folder / "model", repo, private=private,
                              token=publish.hub_token(token_block))  # fmt: skip
    publish.record_pushed(data_dir, repo, {"model_key": model.key, "release_key": release_ref.key, "url": url,
                                           "pushed_at": pd.Timestamp.now(tz="UTC").isoformat()})  # fmt: skip
    log.info("pushed %s to %s: %s", release_ref.key, repo, url)
    return url


def within_tolerance(comparison: ArtifactRef) -> set[str]:
    """The export formats whose scores stayed within their tolerance of the PyTorch model's."""
    table = pd.read_parquet(comparison.folder / "comparison.parquet")
    return set(table.loc[table["within_tolerance"], "format"])
