"""The stages after the decision: the report, the release (card, exports) and the push to the Hub."""

from __future__ import annotations

from prefect import get_run_logger, task
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.cache_policies import NO_CACHE

from tasks.evaluation.evaluate import read_metrics
from tasks.evaluation.settings import EvalSettings
from tasks.models import network
from tasks.report import tables
from tasks.shipping import card, publish, release
from tasks.stages.common import logged
from tasks.stages.model import trained_model
from tasks.store import catalog
from tasks.store.artifacts import ArtifactRef, materialize
from tasks.store.catalog import VERSIONS
from tasks.store.runs import RunRecord


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
        markdown=tables.lineage_markdown(runs.named() | {"report": ref}, record.champion, record.evaluation),
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
        logged(ref)
        if fmt in shipment.left_out:
            get_run_logger().warning("export %s left out of the release: its scores moved beyond its tolerance", fmt)
    if shipment.comparison is not None:
        table = (logged(shipment.comparison).folder / catalog.COMPARISON_MARKDOWN).read_text()
        about = "each export against the PyTorch model: scores, CPU speed, size"
        create_markdown_artifact(key="train-embeddings-exports", markdown=table, description=about)
    create_markdown_artifact(key="train-embeddings-model-card", markdown=(shipment.folder / card.CARD).read_text(),
                             description="the model card of this run's model")  # fmt: skip
    logged(shipment.release)
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
