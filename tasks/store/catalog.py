"""The catalog: every stage's folder under ``artifacts/``, its version and the files its artifacts hold.

One place to look up what is where. The stage name is the folder (``artifacts/<stage>/<key>/``), the word
the run record, the lineage and ``inspect`` use; a file name is written and read through these constants
only. Bump a stage's version when its code changes what it writes: its key and those downstream move.
"""

from __future__ import annotations

from dataclasses import dataclass

# File names, by the stage that writes them
RAW_FILE = "raw.parquet"  # raw: the source's rows as read and validated
PAIRS_FILE = "pairs.parquet"  # pairs: the rows in the loss's format
INDEX_FILE = "index.faiss"  # indexes: the miner's FAISS index over the source's candidate texts
TRIPLETS_FILE = "triplets.parquet"  # triplets: pairs with their negatives
SAMPLE_FILE = "sample.parquet"  # triplets: 200 of them to eyeball
SIMILARITIES_PLOT = "similarities.png"  # triplets (semi-hard): anchor-positive vs anchor-negative scores
TOKENS_FILE = "tokens.parquet"  # tokens: the ids the trainer reads
LENGTHS_PLOT = "lengths.png"  # tokens: tokens per text, by column
MODEL_FOLDER = "model"  # models, exports, releases: a sentence-transformers folder
TRAINING_FILE = "training.json"  # models: the training summary and log history
METRICS_JSON = "metrics.json"  # metrics: the scores, flat
METRICS_FILE = "metrics.parquet"  # metrics: one row per metric, a column per dimension
STSB_PAIRS_FILE = "stsb_pairs.parquet"  # metrics: per-pair similarities, for the champion's bootstrap
HOLDOUT_QUERIES_FILE = "holdout_queries.parquet"  # metrics: per-query retrieval scores on the held-out split
HELD_OUT_FILE = "holdout.parquet"  # holdout: the held-out rows, in the source's layout (raw.parquet: the rest)
QUERIES_FILE = "queries.parquet"  # holdout: each query and its relevant documents' corpus positions
CORPUS_FILE = "corpus.parquet"  # holdout: the held-out positives, then the distractors
COMPARISON_FILE = "comparison.parquet"  # reports, comparisons, grids: the table
COMPARISON_PLOT = "comparison.png"
COMPARISON_MARKDOWN = "comparison.md"
DIMENSIONS_FILE = "dimensions.parquet"  # reports (Matryoshka): score against dimension
DIMENSIONS_PLOT = "dimensions.png"


@dataclass(frozen=True)
class Stage:
    name: str  # the folder under artifacts/, and the word for it everywhere
    version: int
    files: tuple[str, ...]  # what an artifact of it holds beside its manifest (some only in some runs)
    holds: str


STAGES = {
    s.name: s
    for s in (
        Stage("raw", 2, (RAW_FILE,), "the source's rows as read and validated (NLI, pairs or triplets)"),
        Stage(
            "holdout",
            1,
            (RAW_FILE, HELD_OUT_FILE, QUERIES_FILE, CORPUS_FILE),
            "the held-out split: training rows (raw.parquet), held-out rows, their queries and corpus",
        ),
        Stage("pairs", 2, (PAIRS_FILE,), "the rows in the loss's format"),
        Stage("indexes", 1, (INDEX_FILE,), "a miner's FAISS index over a source's candidates (faiss.read_index)"),
        Stage("triplets", 3, (TRIPLETS_FILE, SAMPLE_FILE, SIMILARITIES_PLOT), "pairs with their negatives"),
        Stage("tokens", 1, (TOKENS_FILE, LENGTHS_PLOT), "token ids of the training data"),
        Stage("models", 3, (MODEL_FOLDER, TRAINING_FILE), "a trained model"),
        Stage("metrics", 3, (METRICS_JSON, METRICS_FILE, STSB_PAIRS_FILE, HOLDOUT_QUERIES_FILE), "a model's scores"),
        Stage(
            "reports", 1, (COMPARISON_FILE, COMPARISON_PLOT, DIMENSIONS_FILE, DIMENSIONS_PLOT), "base against trained"
        ),
        Stage("exports", 1, (MODEL_FOLDER,), "the model in one serving format"),
        Stage(
            "comparisons",
            1,
            (COMPARISON_FILE, COMPARISON_MARKDOWN, COMPARISON_PLOT),
            "every export against the PyTorch model",
        ),
        Stage("releases", 2, (MODEL_FOLDER,), "the model, its card and its exports, to serve or publish"),
        Stage(
            "grids",
            1,
            (COMPARISON_FILE, COMPARISON_MARKDOWN, COMPARISON_PLOT, DIMENSIONS_PLOT),
            "the compare-losses flow's loss × negatives grid",
        ),
    )
}
VERSIONS = {name: stage.version for name, stage in STAGES.items()}
