"""The tables a run reports: base → trained for every metric, score against dimension, the lineage."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from tasks.evaluation.settings import dimension_metric
from tasks.report import plots
from tasks.store.artifacts import ArtifactRef, read_manifest, write_parquet
from tasks.store.catalog import COMPARISON_FILE, COMPARISON_PLOT, DIMENSIONS_FILE, DIMENSIONS_PLOT


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
    full = "stsb_test_spearman"
    rows = [{"dimension": d, "base": base[dimension_metric(full, d)], "trained": trained[dimension_metric(full, d)]}
            for d in dims]  # fmt: skip
    return pd.DataFrame(rows).sort_values("dimension").reset_index(drop=True)


def write_report(folder: Path, table: pd.DataFrame, base: dict[str, float], trained: dict[str, float],
                 dims: tuple[int, ...]) -> int:  # fmt: skip
    """The report artifact's files: the comparison table and picture, and score against dimension for
    Matryoshka runs; returns the table's rows."""
    plots.metric_comparison(table[~table["metric"].str.contains("_dim")], folder / COMPARISON_PLOT)
    if dims:
        curve = by_dimension(base, trained, dims)
        plots.dimension_curve(curve, folder / DIMENSIONS_PLOT)
        write_parquet(curve, folder / DIMENSIONS_FILE)
    return write_parquet(table.drop(columns=["champion"]), folder / COMPARISON_FILE)


def markdown_table(df: pd.DataFrame) -> str:
    """A GitHub-style markdown table. Not pandas' ``to_markdown``: it needs tabulate, which only nncf (an
    export's dependency) brings in transitively; four lines here are not worth a direct pin."""
    lines = ["| " + " | ".join(map(str, df.columns)) + " |", "|" + "---|" * len(df.columns)]
    lines += ["| " + " | ".join(map(str, row)) + " |" for row in df.itertuples(index=False)]
    return "\n".join(lines) + "\n"


def held_out_line(evaluation: dict | None) -> str | None:
    """What the ``holdout_*`` metrics were measured on (the run record's ``evaluation``), or None without them."""
    facts = (evaluation or {}).get("holdout_set")
    if not facts:
        return None
    source = facts.get("eval_source")
    where = f"the rows of `{source}`" if source else f"{facts['fraction']} of the anchors"
    return (f"Held-out metrics (`holdout_*`) on split `holdout/{facts['key']}` ({where}, {facts['held_out_rows']:,} "
            f"rows kept out of training): {facts['queries']:,} queries against a corpus of {facts['corpus']:,} "
            f"texts, {facts['distractors']:,} of them distractors.")  # fmt: skip


def lineage_markdown(refs: dict[str, ArtifactRef], decision: dict, evaluation: dict | None = None) -> str:
    """Each step's artifact, key, rows, whether it was cached, and the time it took to build; what the held-out
    metrics were measured on."""
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
        + decision_rule_text(decision)
    )
    held_out = held_out_line(evaluation)
    return (
        "# train-embeddings lineage\n\n"
        + "\n".join(lines)
        + "\n\n"
        + verdict
        + "\n"
        + (f"\n{held_out}\n" if held_out else "")
    )


def decision_rule_text(decision: dict) -> str:
    """The rule that decided, with the gain, min_gain and the bootstrap interval when there are some
    (decisions recorded before these existed: nothing)."""
    if "rule" not in decision:
        return ""
    parts = [f"rule: {decision['rule']}"]
    if decision.get("gain") is not None:
        parts.append(f"gain {decision['gain']:+.4f} (min_gain {decision['min_gain']})")
    interval = decision.get("interval")
    if interval:
        bounds = f"[{interval['low']:+.4f}, {interval['high']:+.4f}]"
        parts.append(f"95% bootstrap interval of the gain {bounds} over {interval['resamples']} resamples")
    return " Decided by " + ", ".join(parts) + "."
