"""The `compare-losses` flow: the loss × negatives grid trained on the same data, one table, one plot.

Each cell is a `train-embeddings` run (a subflow), so every cell is cached like any run and a
re-run of the grid only trains the cells whose inputs changed.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact, create_table_artifact

from flows.train_embeddings import train_embeddings
from flows.watchdog import guard_this_process
from tasks.models.resolve import BUNDLED_MINILM
from tasks.pairs.labels import LOSSES
from tasks.pairs.sources import DEFAULT_NLI_SAMPLE
from tasks.report import plots
from tasks.report.tables import markdown_table
from tasks.store import remote
from tasks.store.artifacts import materialize, write_parquet
from tasks.store.catalog import COMPARISON_FILE, COMPARISON_MARKDOWN, COMPARISON_PLOT, DIMENSIONS_PLOT, VERSIONS
from tasks.store.environment import REPO_ROOT
from tasks.store.leases import leased
from tasks.store.runs import RunRecord

GRID = (
    "softmax",
    "cosine",
    "mnr+none",
    "mnr+soft",
    "mnr+semi-hard",
    "mnr+contradiction",
    "mnr+semi-hard+relative",
    "mnr+soft+matryoshka",
    "gist",
)
# Modifiers after the loss and negatives: MatryoshkaLoss around the loss, or semi-hard negatives
# kept only below 95% of the positive's score, with no absolute margin (NV-Retriever's best setting).
RELATIVE_MARGIN = 0.05
MATRYOSHKA_DIMS = [384, 256, 128, 64]  # all-MiniLM-L6-v2 is 384 wide


def cell_parameters(cell: str, matryoshka_dims: tuple[int, ...] = ()) -> dict:
    """``"mnr+semi-hard"`` → loss mnr with semi-hard negatives; ``"cosine"`` → cosine, no negatives;
    ``"mnr+soft+matryoshka"`` → inside MatryoshkaLoss; ``"mnr+semi-hard+relative"`` → positive-aware mining."""
    loss, *rest = cell.split("+")
    negatives, modifiers = (rest[0], rest[1:]) if rest else (None, [])
    unknown = [m for m in modifiers if m not in ("matryoshka", "relative")]
    if loss not in LOSSES or unknown:
        raise ValueError(f"parameter grid: unknown cell {cell!r}; use e.g. {list(GRID)}")
    parameters: dict = {"loss": loss, "negatives": negatives}
    if "matryoshka" in modifiers:
        parameters["matryoshka_dims"] = list(matryoshka_dims)
    if "relative" in modifiers:  # the relative rule alone: with margin 0.05 as well, it would remove nothing
        parameters |= {"relative_margin": RELATIVE_MARGIN, "margin": 0.0}  # more (p - 0.05|p| >= p - 0.05 for |p| <= 1)
    return parameters


def comparison_table(results: dict[str, RunRecord]) -> pd.DataFrame:
    """One row for the base model, then one per cell: STS-B validation/test and Banking77."""
    first = next(iter(results.values()))
    rows = [{"model": "base", "train_rows": 0} | {m: v["base"] for m, v in first.metrics.items()}]
    for cell, record in results.items():
        rows.append(
            {"model": cell, "train_rows": record.artifacts.training_data.rows}
            | {m: v["trained"] for m, v in record.metrics.items()}
        )
    return pd.DataFrame(rows)


@leased(flow(name="compare-losses"))  # every cell's artifacts kept from gc until the grid ends
def compare_losses(
    grid: tuple[str, ...] = GRID,
    nli_source: str = str(DEFAULT_NLI_SAMPLE.relative_to(REPO_ROOT)),
    max_pairs: int | None = 50_000,
    base_model: str = BUNDLED_MINILM,
    miner_model: str = BUNDLED_MINILM,
    epochs: float = 1.0,
    batch_size: int = 32,
    learning_rate: float = 5e-5,
    seed: int = 42,
    max_steps: int = -1,
    eval_limit: int | None = None,
    eval_tasks: list[str] | None = None,
    matryoshka_dims: list[int] = MATRYOSHKA_DIMS,
    data_dir: str = "data",
) -> dict:
    """Train every cell of the grid on the same data and compare them with the base model.

    Every cell is evaluated the same way: the same tasks and rows, and STS-B at each of
    ``matryoshka_dims`` for every model, so the table shows what truncation costs each of them.
    """
    guard_this_process()  # no orphans when this process is killed (flows/watchdog.py)
    dims = tuple(matryoshka_dims)
    grid = list(grid)
    cells = {cell: cell_parameters(cell, dims) for cell in grid}  # unknown cells fail before any training
    results = {
        cell: RunRecord.from_dict(train_embeddings(
            nli_source=nli_source,
            max_pairs=max_pairs,
            base_model=base_model,
            miner_model=miner_model,
            epochs=epochs,
            batch_size=batch_size,
            learning_rate=learning_rate,
            seed=seed,
            max_steps=max_steps,
            eval_limit=eval_limit,
            eval_tasks=eval_tasks,
            eval_dims=list(dims),
            data_dir=data_dir,
            **cells[cell],
        ))
        for cell in grid
    }  # fmt: skip
    table = comparison_table(results)
    parents = [record.artifacts.trained_metrics for record in results.values()]

    def build(folder: Path) -> int:
        plots.grid_comparison(table, folder / COMPARISON_PLOT)
        plots.grid_dimensions(table, folder / DIMENSIONS_PLOT)
        (folder / COMPARISON_MARKDOWN).write_text(markdown_table(table.round(4)))
        return write_parquet(table, folder / COMPARISON_FILE)

    data = remote.normalise(data_dir)
    ref = materialize(data, "grids", VERSIONS["grids"], {"grid": grid}, parents, build)
    create_table_artifact(key="compare-losses", table=table.round(4).to_dict(orient="records"))
    create_markdown_artifact(key="compare-losses-table", markdown=(ref.folder / COMPARISON_MARKDOWN).read_text())
    get_run_logger().info("comparison at %s\n%s", ref.path, table.round(4).to_string(index=False))
    return {"path": ref.path, "table": table.to_dict(orient="records")}
