"""Batches from token ids: the collator only pads, and the model computes on (nearly) real tokens only.

Two ways to keep padding out of the model, both leaving the batch's contents exactly as the
sampler drew them, so in-batch negatives stay as random as with the stock collator:

* **flattened**: where the model runs with flash attention, every text of the batch (all columns)
  goes into one flat sequence with its boundaries (``cu_seq_lens``), as sentence-transformers'
  own unpadding does. No padding at all.
* **length-grouped**: elsewhere (SDPA, CPU), every text of the batch is sorted by length and cut
  into a few chunks, each padded only to its own longest text. The cut points minimise padded
  tokens plus a per-forward cost, so there are few chunks. The embeddings are put back in column
  order before the loss sees them: the loss, its in-batch negatives and its gradients are those
  of the padded batch, up to rounding and dropout.

The cached (GradCache) loss slices the columns itself, so with it the collator pads each column
on its own, like the stock collator, but from ids.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

import datasets
import numpy as np
import pyarrow as pa
import torch
from sentence_transformers.base.data_collator import BaseDataCollator

from tasks.training.tokens import SUFFIX, TokenizedData

# A forward pass costs about this many padded tokens' worth of work beyond its tokens (launches,
# small matrix products). It decides how many chunks a batch is cut into. On CUDA the trainer measures
# it for the model at start-up instead; the CPU keeps 64.
CHUNK_OVERHEAD_TOKENS = {"cuda": 256, "cpu": 64}


class Layout(StrEnum):
    """How a batch reaches the model (see the module's docstring)."""

    GROUPED = "grouped"  # length-sorted chunks across all columns, for GroupedForwardLoss
    FLATTENED = "flattened"  # one flat sequence, with flash attention, for GroupedForwardLoss
    COLUMNS = "columns"  # each column padded on its own, for any sentence-transformers loss


@dataclass(frozen=True)
class ChunkedBatch:
    """The collator-to-loss contract of the grouped and flattened layouts.

    ``chunks``: the model inputs of each chunk, texts of all columns sorted by length (one chunk when
    flattened). ``restore[i]``: the row, in the chunks' concatenated output, of the i-th text in column
    order (all anchors, then all positives, ...). The trainer hands a batch to the loss as one dict of
    prefixed tensors (``chunk<n>_input_ids``, ...), which it splits per prefix: ``to_inputs`` and
    ``from_features`` are the two ends of that.
    """

    chunks: list[dict[str, torch.Tensor]]
    restore: torch.Tensor

    def to_inputs(self) -> dict[str, torch.Tensor]:
        inputs = {f"chunk{n}_{key}": value for n, chunk in enumerate(self.chunks) for key, value in chunk.items()}
        return inputs | {"chunk0_restore": self.restore}

    @classmethod
    def from_features(cls, features: list[dict[str, torch.Tensor]]) -> ChunkedBatch:
        """From the per-prefix dicts the trainer made of ``to_inputs``' output, in chunk order."""
        chunks = [dict(f) for f in features]
        return cls(chunks, chunks[0].pop("restore"))


class TokenDataset(datasets.Dataset):
    """The ids table as the trainer's dataset. Batches skip the row-by-row Python conversion of
    ``datasets``: ``__getitems__`` hands the collator the row numbers, and it reads the Arrow columns.
    Single rows (``dataset[i]``, what the no-duplicates sampler compares) stay as usual."""

    def __getitems__(self, keys: list) -> list:
        return [int(k) for k in keys]


def token_dataset(data: TokenizedData) -> TokenDataset:
    """Columns renamed to the loss's names (anchor, positive, ...), in the loss's order."""
    table = data.table.rename_columns([n.removesuffix(SUFFIX) for n in data.table.column_names])
    from datasets.table import InMemoryTable

    return TokenDataset(InMemoryTable(table))


def plan_chunks(lengths: np.ndarray, overhead: int) -> list[np.ndarray]:
    """Positions of ``lengths`` cut into chunks of similar length, longest first.

    Exact dynamic programme over the distinct lengths: a chunk costs its rows times its longest
    length plus ``overhead``; the plan with the least total cost wins.
    """
    order = np.argsort(-lengths, kind="stable")
    values, counts = np.unique(lengths[order][::-1], return_counts=True)
    values, counts = values[::-1], counts[::-1]  # distinct lengths, longest first
    groups = len(values)
    before = np.concatenate([[0], np.cumsum(counts)])  # rows before each group
    best = np.zeros(groups + 1)
    start = np.zeros(groups + 1, dtype=np.int64)
    for end in range(1, groups + 1):  # a chunk covering groups [i, end)
        cost = best[:end] + (before[end] - before[:end]) * values[:end] + overhead
        i = int(np.argmin(cost))
        best[end], start[end] = cost[i], i
    cuts, end = [], groups
    while end > 0:
        cuts.append((before[start[end]], before[end]))
        end = start[end]
    return [order[a:b] for a, b in reversed(cuts)]


def _column(table: pa.Table, rows: np.ndarray, name: str) -> tuple[np.ndarray, np.ndarray]:
    """(offsets-free) values and lengths of the chosen rows of one ids column."""
    column = table.column(name).take(pa.array(rows)).combine_chunks()
    offsets = column.offsets.to_numpy()
    values = column.values.to_numpy()[offsets[0] : offsets[-1]]
    return values, np.diff(offsets)


def _pad(values: np.ndarray, lengths: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Right-padded ids (pad id 0, masked out) and the attention mask, from flat values and lengths."""
    width = int(lengths.max(initial=1))
    mask = np.arange(width)[None, :] < lengths[:, None]
    ids = np.zeros(mask.shape, dtype=np.int64)
    ids[mask] = values
    return ids, mask.astype(np.int64)


@dataclass
class TokenCollator(BaseDataCollator):
    """Builds training batches from row numbers of a token ids table (see :class:`TokenDataset`).

    ``layout``: see :class:`Layout`. Counts real and computed tokens as it goes.
    """

    preprocess_fn: Any = None
    table: pa.Table | None = None
    columns: list[str] = field(default_factory=list)
    features: tuple[str, ...] = ("attention_mask",)
    layout: Layout = Layout.GROUPED
    overhead: int = CHUNK_OVERHEAD_TOKENS["cpu"]
    flattener: Any = None  # the model's DataCollatorWithFlattening, in flattened mode
    position_offset: int = 0  # where the model's positions start (``flatten_position_offset``), flattened only
    real_tokens: int = 0
    computed_tokens: int = 0

    def _features(self, ids: np.ndarray, mask: np.ndarray) -> dict[str, torch.Tensor]:
        out = {"input_ids": torch.from_numpy(ids), "attention_mask": torch.from_numpy(mask)}
        if "token_type_ids" in self.features:
            out["token_type_ids"] = torch.zeros_like(out["input_ids"])
        return out

    def __call__(self, rows: list[int]) -> dict[str, Any]:
        rows = np.asarray(rows, dtype=np.int64)
        batch: dict[str, Any] = {}
        label = next((c for c in self.valid_label_columns if c in self.table.column_names), None)
        if label:
            values = np.array(self.table.column(label).take(pa.array(rows)).to_numpy())
            # as the stock collator's torch.tensor(list) makes them: float32 scores, int64 labels
            batch["label"] = torch.from_numpy(values.astype(np.float32) if values.dtype.kind == "f" else values)
        parts = [_column(self.table, rows, f"{c}{SUFFIX}") for c in self.columns]
        lengths = np.concatenate([p[1] for p in parts])
        self.real_tokens += int(lengths.sum())
        if self.layout is Layout.COLUMNS:
            for column, (values, column_lengths) in zip(self.columns, parts):
                ids, mask = _pad(values, column_lengths)
                self.computed_tokens += ids.size
                for key, value in self._features(ids, mask).items():
                    batch[f"{column}_{key}"] = value
            return batch

        # grouped or flattened: all texts of all columns, column-major (all anchors, all positives, ...)
        values = np.concatenate([p[0] for p in parts])
        offsets = np.concatenate([[0], np.cumsum(lengths)])
        if self.layout is Layout.FLATTENED:
            self.computed_tokens += int(lengths.sum())
            return batch | ChunkedBatch([self._flat(values, lengths)], torch.arange(len(lengths))).to_inputs()

        chunks = plan_chunks(lengths, self.overhead)
        sorted_positions = np.concatenate(chunks)
        restore = np.empty_like(sorted_positions)
        restore[sorted_positions] = np.arange(len(sorted_positions))  # column-major position -> sorted row
        features = []
        for chunk in chunks:
            chunk_values = np.concatenate([values[offsets[i] : offsets[i + 1]] for i in chunk])
            ids, mask = _pad(chunk_values, lengths[chunk])
            self.computed_tokens += ids.size
            features.append(self._features(ids, mask))
        return batch | ChunkedBatch(features, torch.from_numpy(restore)).to_inputs()

    def _flat(self, values: np.ndarray, lengths: np.ndarray) -> dict[str, Any]:
        """What the model's ``DataCollatorWithFlattening`` builds from per-text Python lists, in numpy: one
        sequence of every text, positions restarting at each text, the boundaries flash attention reads."""
        flattener, total = self.flattener, int(lengths.sum())
        out: dict[str, Any] = {"input_ids": torch.from_numpy(values.astype(np.int64)[None])}
        if flattener.return_position_ids:
            starts = np.repeat(np.cumsum(lengths) - lengths, lengths)
            positions = np.arange(total, dtype=np.int64) - starts + flattener.position_ids_start + self.position_offset
            out["position_ids"] = torch.from_numpy(positions[None])
        if flattener.return_seq_idx:
            out["seq_idx"] = torch.from_numpy(np.repeat(np.arange(len(lengths), dtype=np.int32), lengths)[None])
        if flattener.return_flash_attn_kwargs:
            bounds = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int32)
            out["cu_seq_lens_q"], out["cu_seq_lens_k"] = torch.from_numpy(bounds), torch.from_numpy(bounds.copy())
            out["max_length_q"] = out["max_length_k"] = int(lengths.max(initial=0))
        return out

    @property
    def pad_ratio(self) -> float | None:
        """Tokens the model computed on per real token, over the batches built so far."""
        return round(self.computed_tokens / self.real_tokens, 4) if self.real_tokens else None


def can_flatten(model) -> bool:
    """Whether the model's first module unpads text with flash attention (sentence-transformers decides)."""
    first = model[0]
    return bool(getattr(first, "can_flatten_inputs", False)) and getattr(first, "data_collator", None) is not None


def flatten_position_offset(model) -> int:
    """Where the model's flattened positions start beyond the flattener's own ``position_ids_start``.

    RoBERTa-like models (XLM-R, MPNet) count positions from ``padding_idx + 1``, and sentence-transformers
    shifts the flattener's positions by that when it flattens. The shift is read from what the model's own
    ``preprocess`` makes of two probe texts, so the collator's flat batches carry the positions the model's
    own batches would; a model that should flatten but whose preprocess does not is refused."""
    flattener = model[0].data_collator
    if not flattener.return_position_ids:
        return 0
    probe = model.preprocess(["a probe", "a longer probe text"])
    if "cu_seq_lens_q" not in probe or "position_ids" not in probe:
        raise ValueError(
            "the model's first module says it flattens its texts (flash attention), but its preprocess returned "
            f"{sorted(k for k in probe if isinstance(k, str))}, no flat sequence with position ids: the positions "
            "of a flattened batch cannot be told; train with parameter unpad=False or another attention kernel"
        )
    return int(probe["position_ids"].reshape(-1)[0]) - flattener.position_ids_start


def build_collator(model, data: TokenizedData, unpad: bool, device: str, overhead: int | None = None) -> TokenCollator:
    """The collator for this model and data: flattened or grouped when ``unpad`` (the loss then goes inside
    GroupedForwardLoss), else per column. ``overhead``: a forward pass's cost in tokens, measured for this
    model and device (``throughput.measure_chunk_overhead``), else the device's default."""
    cuda = device.startswith("cuda")
    if not unpad:
        layout = Layout.COLUMNS
    elif can_flatten(model):
        layout = Layout.FLATTENED
    else:
        layout = Layout.GROUPED
    return TokenCollator(
        preprocess_fn=model.preprocess,
        table=data.table,
        columns=data.columns,
        features=data.spec.features,
        layout=layout,
        overhead=overhead if overhead is not None else CHUNK_OVERHEAD_TOKENS["cuda" if cuda else "cpu"],
        flattener=getattr(model[0], "data_collator", None) if layout is Layout.FLATTENED else None,
        position_offset=flatten_position_offset(model) if layout is Layout.FLATTENED else 0,
    )


def padding_profile(collator: TokenCollator, rows: int, batch_size: int, seed: int, most: int = 200) -> float | None:
    """Computed tokens per real token over random batches, as this collator builds them.

    A property of the batches, not of the device: it is measured on CPU as well as on a GPU. Uses a
    fresh collator of the same settings, so training's own counters are left alone.
    """
    if rows == 0:
        return None
    if collator.layout is Layout.FLATTENED:  # one flat sequence: the model computes on real tokens only
        return 1.0
    probe = TokenCollator(
        table=collator.table,
        columns=collator.columns,
        features=collator.features,
        layout=collator.layout,
        overhead=collator.overhead,
    )
    order = np.random.default_rng(seed).permutation(rows)
    for start in range(0, min(rows, most * batch_size), batch_size):
        probe(order[start : start + batch_size].tolist())
    return probe.pad_ratio
