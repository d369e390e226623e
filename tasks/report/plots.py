"""Pictures people would rather look at than tables: similarity histograms, metric comparisons."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402


def similarity_histogram(triplets: pd.DataFrame, path: Path) -> None:
    """Anchor–positive against anchor–negative cosine similarities of mined triplets."""
    fig, ax = plt.subplots(figsize=(7, 4))
    bins = [i / 50 for i in range(-10, 51)]
    ax.hist(triplets["positive_score"], bins=bins, alpha=0.6, label="anchor–positive")
    ax.hist(triplets["negative_score"], bins=bins, alpha=0.6, label="anchor–negative")
    ax.set_xlabel("cosine similarity (miner model)")
    ax.set_ylabel("triplets")
    ax.set_title(f"Mined negatives: {len(triplets)} triplets")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def metric_comparison(table: pd.DataFrame, path: Path) -> None:
    """Grouped bars: base against trained model for every metric."""
    fig, ax = plt.subplots(figsize=(7, 4))
    x = range(len(table))
    width = 0.38
    ax.bar([i - width / 2 for i in x], table["base"], width, label="base")
    ax.bar([i + width / 2 for i in x], table["trained"], width, label="trained")
    for i, (b, t) in enumerate(zip(table["base"], table["trained"])):
        ax.text(i - width / 2, b, f"{b:.3f}", ha="center", va="bottom", fontsize=8)
        ax.text(i + width / 2, t, f"{t:.3f}", ha="center", va="bottom", fontsize=8)
    ax.set_xticks(list(x), table["metric"], rotation=10)
    ax.set_ylim(0, 1.05)
    ax.set_title("Base → trained")
    ax.legend(loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def grid_comparison(table: pd.DataFrame, path: Path) -> None:
    """One group of bars per metric, one bar per model (base first)."""
    metrics = [c for c in table.columns if c not in ("model", "train_rows") and "_dim" not in c]
    fig, ax = plt.subplots(figsize=(9, 4.5))
    width = 0.8 / len(table)
    for i, row in enumerate(table.itertuples(index=False)):
        values = [getattr(row, m) for m in metrics]
        ax.bar([j + i * width for j in range(len(metrics))], values, width, label=row.model)
    ax.set_xticks([j + 0.4 - width / 2 for j in range(len(metrics))], metrics)
    ax.set_ylim(0, 1.0)
    ax.set_title("Loss × negatives, same data")
    ax.legend(fontsize=8, ncol=3, loc="lower center")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def dimension_curve(table: pd.DataFrame, path: Path) -> None:
    """STS-B test Spearman against the embedding dimension kept (Matryoshka truncation), base and trained."""
    fig, ax = plt.subplots(figsize=(7, 4))
    for column, marker in (("base", "o"), ("trained", "s")):
        ax.plot(table["dimension"], table[column], marker=marker, label=column)
    ax.set_xscale("log", base=2)
    ax.set_xticks(list(table["dimension"]), [str(d) for d in table["dimension"]])
    ax.set_xlabel("embedding dimension kept")
    ax.set_ylabel("STS-B test Spearman")
    ax.set_title("Score against dimension (Matryoshka)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def grid_dimensions(table: pd.DataFrame, path: Path, metric: str = "stsb_test_spearman") -> None:
    """STS-B test Spearman against the dimension kept, one line per model (the full width at the right)."""
    dims = sorted(int(c.rsplit("_dim", 1)[1]) for c in table.columns if c.startswith(f"{metric}_dim"))
    fig, ax = plt.subplots(figsize=(8, 4.5))
    for row in table.itertuples(index=False):
        values = row._asdict()
        ax.plot(dims, [values[f"{metric}_dim{d}"] for d in dims], marker="o", label=row.model)
    if dims:
        ax.set_xscale("log", base=2)
        ax.set_xticks(dims, [str(d) for d in dims])
    ax.set_xlabel("embedding dimension kept")
    ax.set_ylabel("STS-B test Spearman")
    ax.set_title("Score against dimension, every model")
    ax.legend(fontsize=8, ncol=2)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def format_comparison(table: pd.DataFrame, path: Path) -> None:
    """Each serving format against PyTorch: CPU speed, STS-B test score and size, side by side."""
    panels = [("speed_ratio", "encoding speed (× PyTorch)"), ("stsb_test_spearman", "STS-B test Spearman"),
              ("megabytes", "size on disk (MB)")]  # fmt: skip
    fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 3.4))
    for ax, (column, title) in zip(axes, panels):
        ax.barh(table["format"], table[column], color=["#999999", *["#3b75af"] * (len(table) - 1)])
        ax.set_title(title, fontsize=10)
        ax.invert_yaxis()
        if column == "stsb_test_spearman":
            low = float(table[column].min())
            ax.set_xlim(max(0.0, low - 0.05), float(table[column].max()) + 0.01)
        for y, value in enumerate(table[column]):
            ax.text(value, y, f" {value:.3g}", va="center", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
