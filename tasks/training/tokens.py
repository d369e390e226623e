"""Token ids of the training data, made once with the model's own preprocessing and kept as Parquet.

sentence-transformers' data collator tokenises every batch inside the training loop, on one core,
which caps a GPU at a few thousand triplets per second. Tokenising the whole training set once,
with the same ``model.preprocess`` the collator would call (same truncation, same special tokens),
turns that into a cached stage: training only pads, and re-training with another learning rate or
epoch count tokenises nothing. The ids are stored as integer-list columns ``<column>_input_ids``
beside the loss's label or score, so the artifact opens in pandas or DuckDB like every other one.

The tokenizer's fingerprint and ``max_seq_length`` are recorded with the ids: training refuses ids
made by another tokenizer or truncated to another length than the model it trains.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from tasks.pairs.labels import COLUMNS, RANKING
from tasks.pairs.sources import negative_columns
from tasks.store.artifacts import read_manifest
from tasks.store.catalog import TOKENS_FILE

SUFFIX = "_input_ids"
LABEL_COLUMNS = ("label", "score")


class TokenMismatch(ValueError):
    """Token ids that were not made by the model's tokenizer at the model's max_seq_length."""


@dataclass(frozen=True)
class TokenizerSpec:
    """What decides the ids: the tokenizer's vocabulary and rules, and where texts are cut."""

    fingerprint: str
    max_seq_length: int | None
    features: tuple[str, ...]  # what the model's preprocess returns besides the ids (attention_mask, ...)

    def as_dict(self) -> dict[str, Any]:
        return {"fingerprint": self.fingerprint, "max_seq_length": self.max_seq_length, "features": list(self.features)}


def tokenizer_fingerprint(tokenizer) -> str:
    """A hash of the tokenizer's vocabulary, normaliser, pre-tokeniser, model and post-processor.

    Truncation and padding state are left out: the fast tokenizer keeps the last call's settings in
    its serialised form, so including them would make the same tokenizer look different after use.
    """
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is not None:
        spec = json.loads(backend.to_str())
        spec.pop("truncation", None)
        spec.pop("padding", None)
    else:  # a slow tokenizer: its vocabulary and its settings
        spec = {"vocab": tokenizer.get_vocab(), "init": {k: str(v) for k, v in tokenizer.init_kwargs.items()}}
    spec["class"] = type(tokenizer).__name__
    return hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:16]


@contextlib.contextmanager
def padded(model) -> Iterator[None]:
    """The model's own preprocessing, padded: a model loaded with flash attention would flatten its texts
    (no attention mask), and ids are stored per text, not flattened."""
    first = model[0]
    flattening = getattr(first, "can_flatten_inputs", False)
    if flattening:
        previous = first.unpad_inputs
        first.unpad_inputs = False
    try:
        yield
    finally:
        if flattening:
            first.unpad_inputs = previous


def tokenizer_spec(model) -> TokenizerSpec:
    """The spec of a loaded SentenceTransformer, as training will use it."""
    with padded(model):
        probe = model.preprocess(["a"])
    features = tuple(
        k for k, v in probe.items() if k != "input_ids" and hasattr(v, "shape") and getattr(v, "ndim", 0) == 2
    )
    return TokenizerSpec(tokenizer_fingerprint(model.tokenizer), model.max_seq_length, features)


def text_columns(frame: pd.DataFrame | pa.Table, loss: str) -> list[str]:
    """The loss's text columns in the order the loss reads them (mined negatives last)."""
    columns = [c for c in COLUMNS[loss] if c not in LABEL_COLUMNS]
    if loss in RANKING:
        columns += negative_columns(_names(frame))
    return columns


def _names(frame: pd.DataFrame | pa.Table) -> list[str]:
    return list(frame.column_names if isinstance(frame, pa.Table) else frame.columns)


def _texts(frame: pd.DataFrame | pa.Table, column: str) -> pa.ChunkedArray:
    """One text column as Arrow strings: a table's as stored, a frame's as ``astype(str)`` spells them."""
    if isinstance(frame, pa.Table):
        return pc.cast(frame.column(column), pa.large_string())
    return pa.chunked_array([pa.array(frame[column].astype(str).to_numpy(dtype=object), pa.large_string())])


def _ids_array(model, texts: Sequence[str]) -> pa.ListArray:
    """One list of ids per text, exactly as ``model.preprocess`` makes them, without the padding."""
    with padded(model):
        out = model.preprocess(list(texts))
    ids = out["input_ids"].numpy()
    mask = out["attention_mask"].numpy().astype(bool)
    lengths = mask.sum(axis=1)
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int32)
    return pa.ListArray.from_arrays(pa.array(offsets), pa.array(ids[mask].astype(np.int32)))


def tokenize_frame(
    frame: pd.DataFrame | pa.Table,
    loss: str,
    model,
    chunk: int = 4096,
    progress: Callable[[float], None] | None = None,
) -> pa.Table:
    """``<column>_input_ids`` for each text column of the loss, plus its label or score column.

    Distinct texts are tokenised once (MNLI premises repeat), in chunks so memory stays bounded. The texts
    stay Arrow strings throughout (an Arrow table is read as is): only a chunk at a time becomes Python
    strings, for the tokenizer, so a million rows cost their bytes, not a million Python objects each.
    """
    columns = text_columns(frame, loss)
    for column in columns:
        if column not in _names(frame):
            raise ValueError(f"training data: column {column!r} is missing (has {_names(frame)})")
    texts = {c: _texts(frame, c) for c in columns}
    everything = pa.chunked_array([piece for c in columns for piece in texts[c].chunks], pa.large_string())
    distinct = pc.unique(everything)  # first appearance first, as pd.unique
    del everything
    arrays = []
    for start in range(0, len(distinct), chunk):
        arrays.append(_ids_array(model, distinct.slice(start, chunk).to_pylist()))
        if progress:
            progress(min(1.0, (start + chunk) / max(1, len(distinct))))
    ids = pa.concat_arrays(arrays) if arrays else pa.array([], type=pa.list_(pa.int32()))
    del arrays
    table = {f"{c}{SUFFIX}": ids.take(pc.index_in(texts.pop(c), value_set=distinct).combine_chunks()) for c in columns}
    for label in LABEL_COLUMNS:
        if label in _names(frame):
            values = frame.column(label).combine_chunks() if isinstance(frame, pa.Table) else frame[label].to_numpy()
            table[label] = pa.array(values)
    return pa.table(table)


def tokenize_file(path: Path, loss: str, model, progress: Callable[[float], None] | None = None) -> pa.Table:
    """``tokenize_frame`` of a Parquet file, reading only the loss's columns, straight into Arrow (no pandas)."""
    names = pq.read_schema(path).names
    negatives = negative_columns(names) if loss in RANKING else []
    wanted = [c for c in names if c in COLUMNS[loss] or c in LABEL_COLUMNS or c in negatives]
    return tokenize_frame(pq.read_table(path, columns=wanted), loss, model, progress=progress)


def ids_lengths(table: pa.Table) -> dict[str, np.ndarray]:
    """Tokens per row, for each ids column."""
    return {
        name: np.diff(table.column(name).combine_chunks().offsets.to_numpy())
        for name in table.column_names
        if name.endswith(SUFFIX)
    }


def describe(table: pa.Table, spec: TokenizerSpec) -> dict[str, Any]:
    """Per column: real tokens, length quantiles, rows cut at max_seq_length."""
    stats = {}
    for name, lengths in ids_lengths(table).items():
        stats[name] = {
            "tokens": int(lengths.sum()),
            "mean": round(float(lengths.mean()), 2) if len(lengths) else 0.0,
            "p50": int(np.percentile(lengths, 50)) if len(lengths) else 0,
            "p95": int(np.percentile(lengths, 95)) if len(lengths) else 0,
            "max": int(lengths.max()) if len(lengths) else 0,
            "truncated": int((lengths >= spec.max_seq_length).sum()) if spec.max_seq_length else 0,
        }
    return stats


@dataclass(frozen=True)
class TokenizedData:
    """Token ids ready for training, with the spec that made them."""

    table: pa.Table
    spec: TokenizerSpec
    source: str = "in memory"

    @property
    def columns(self) -> list[str]:
        return [n[: -len(SUFFIX)] for n in self.table.column_names if n.endswith(SUFFIX)]

    def __len__(self) -> int:
        return self.table.num_rows

    def check_against(self, spec: TokenizerSpec) -> None:
        """Refuse ids made for another tokenizer or another max_seq_length: they would train silently wrong."""
        problems = []
        if self.spec.fingerprint != spec.fingerprint:
            problems.append(f"tokenizer {self.spec.fingerprint} (the model's is {spec.fingerprint})")
        if self.spec.max_seq_length != spec.max_seq_length:
            problems.append(f"max_seq_length {self.spec.max_seq_length} (the model's is {spec.max_seq_length})")
        if problems:
            raise TokenMismatch(
                f"token ids in {self.source} were made with {' and '.join(problems)}; "
                "re-run the tokens stage for this model (the flow does this by itself)"
            )


def write_tokens(table: pa.Table, folder: Path) -> int:
    pq.write_table(table, folder / TOKENS_FILE, compression="zstd")
    return table.num_rows


def read_tokens(folder: Path) -> TokenizedData:
    """A tokens artifact's ids, with the tokenizer they were made by (its manifest's)."""
    spec = (read_manifest(folder) or {}).get("tokenizer") or {}
    return TokenizedData(
        pq.read_table(folder / TOKENS_FILE),
        TokenizerSpec(spec.get("fingerprint", "?"), spec.get("max_seq_length"), tuple(spec.get("features", ()))),
        str(folder / TOKENS_FILE),
    )


def lengths_histogram(table: pa.Table, path: Path) -> None:
    """Token lengths per column, the shape that decides how much a batch pads."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    for name, lengths in ids_lengths(table).items():
        ax.hist(lengths, bins=range(0, int(lengths.max(initial=1)) + 2), alpha=0.5, label=name[: -len(SUFFIX)])
    ax.set_xlabel("tokens per text (after truncation)")
    ax.set_ylabel("rows")
    ax.set_title("token lengths of the training data")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
