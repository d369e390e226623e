"""The run's report: base → trained for every metric, as Parquet, a picture and Prefect artifacts."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import pandas as pd
from prefect import task
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.cache_policies import NO_CACHE

from tasks import plots
from tasks.artifacts import ArtifactRef, artifacts_root, atomic_write_text, materialize, read_manifest, write_parquet
from tasks.champion import read_champion


def comparison(base: dict[str, float], trained: dict[str, float], champion: dict[str, float]) -> pd.DataFrame:
    """One row per metric: base, trained, their difference, and the champion after this run (when it has it)."""
    rows = [
        {
            "metric": m,
            "base": base[m],
            "trained": trained[m],
            "delta": trained[m] - base[m],
            "champion": champion.get(m, float("nan")),
        }
        for m in base
    ]
    return pd.DataFrame(rows)


def by_dimension(base: dict[str, float], trained: dict[str, float], dims: tuple[int, ...]) -> pd.DataFrame:
    """STS-B test Spearman against embedding dimension, base and trained (full dimension included)."""
    from tasks.evaluation import dimension_metric

    full = "stsb_test_spearman"
    rows = [{"dimension": d, "base": base[dimension_metric(full, d)], "trained": trained[dimension_metric(full, d)]}
            for d in dims]  # fmt: skip
    return pd.DataFrame(rows).sort_values("dimension").reset_index(drop=True)


def markdown_table(df: pd.DataFrame) -> str:
    """A GitHub-style markdown table (pandas' own needs the tabulate package)."""
    lines = ["| " + " | ".join(map(str, df.columns)) + " |", "|" + "---|" * len(df.columns)]
    lines += ["| " + " | ".join(map(str, row)) + " |" for row in df.itertuples(index=False)]
    return "\n".join(lines) + "\n"


def lineage_markdown(refs: dict[str, ArtifactRef], decision: dict) -> str:
    """Each step's artifact, key, rows, whether it was cached, and the time it took to build."""
    lines = ["| step | stage/key | rows | cached | build seconds | path |", "|---|---|---|---|---|---|"]
    for step, ref in refs.items():
        seconds = (read_manifest(ref.folder) or {}).get("seconds")
        lines.append(f"| {step} | {ref.stage}/{ref.key} | {ref.rows} | {ref.cached} | {seconds} | `{ref.path}` |")
    verdict = (
        f"**Champion** ({decision['metric']}): {decision['reason']}. "
        f"Candidate {decision['candidate']['model_key']} scored {decision['candidate']['score']:.4f}; "
        + (
            f"champion now {decision['champion_after']['model_key']} ({decision['champion_after']['score']:.4f})."
            if decision.get("champion_after")
            else "no champion."
        )
    )
    return "# train-embeddings lineage\n\n" + "\n".join(lines) + "\n\n" + verdict + "\n"


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
    base = json.loads((base_metrics.folder / "metrics.json").read_text())
    trained = json.loads((trained_metrics.folder / "metrics.json").read_text())
    champion = read_champion(data_dir) or {}
    table = comparison(base, trained, champion.get("metrics", trained))

    def build(folder: Path) -> int:
        plots.metric_comparison(table[~table["metric"].str.contains("_dim")], folder / "comparison.png")
        if dims:
            curve = by_dimension(base, trained, dims)
            plots.dimension_curve(curve, folder / "dimensions.png")
            write_parquet(curve, folder / "dimensions.parquet")
        return write_parquet(table.drop(columns=["champion"]), folder / "comparison.parquet")

    ref = materialize(data_dir, "reports", 1, {}, [base_metrics, trained_metrics], build)
    create_table_artifact(
        key="train-embeddings-metrics",
        table=table.round(4).to_dict(orient="records"),
        description="STS-B Spearman (cosine) and the MTEB tasks' main scores: base, trained, champion",
    )
    create_markdown_artifact(
        key="train-embeddings-lineage",
        markdown=lineage_markdown(refs | {"report": ref}, decision),
        description="artifacts of this run and the champion decision",
    )
    return ref


def write_run_record(data_dir: str, summary: dict) -> Path:
    """One JSON per run under artifacts/runs/: parameters, sources, models, artifacts, metrics."""
    folder = artifacts_root(data_dir) / "runs"
    folder.mkdir(parents=True, exist_ok=True)
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%S%fZ")
    path = folder / f"{stamp}.json"
    atomic_write_text(path, json.dumps(summary, indent=2, default=str))
    return path
