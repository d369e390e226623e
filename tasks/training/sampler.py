"""A no-duplicates batch sampler over token-id tables, ours from end to end.

It yields exactly the batches of sentence-transformers' ``NoDuplicatesBatchSampler`` (6.2): same
shuffles from the same generator, seed and epoch, same greedy fill, same ``drop_last`` handling and
resample passes. Two reasons it exists:

* speed: the stock sampler reads and stringifies every row through ``dataset[i]`` (about 11,000
  rows/s on one core, enough to cap a GPU's step rate). Here each text becomes a small integer code
  (equal ids, equal code) computed once from the Arrow column buffers.
* upgrades: it subclasses only the public ``DefaultBatchSampler`` and reads none of the stock
  sampler's private state, which changes between releases.

Give the class itself as the trainer's ``batch_sampler``.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Iterator

import datasets
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import torch
from sentence_transformers.base.sampler import DefaultBatchSampler

logger = logging.getLogger(__name__)

EXCLUDED_COLUMNS = {"dataset_name"}  # never compared, as in sentence-transformers
RESAMPLE_PASSES = 2  # extra shuffled passes to reach len(self) batches, as in sentence-transformers


def _column_keys(column: pa.ChunkedArray) -> list[bytes | str]:
    """One key per row, equal exactly where sentence-transformers' ``str(value)`` is equal.

    Integer lists (token ids): the int64 bytes of the values, straight from the Arrow buffers, and
    ``"None"`` for a null row. Any other column: ``str`` of its Python values, as the stock sampler.
    """
    array = column.combine_chunks()
    if not _is_ids(array):  # another column, or a null id inside a list: Python spells it
        return [str(value) for value in array.to_pylist()]
    buffer = array.values.to_numpy().astype(np.int64, copy=False).tobytes()
    bounds = (array.offsets.to_numpy().astype(np.int64) * 8).tolist()
    keys: list[bytes | str] = [buffer[a:b] for a, b in zip(bounds[:-1], bounds[1:])]
    if array.null_count:
        keys = [key if valid else "None" for key, valid in zip(keys, array.is_valid().to_pylist())]
    return keys


def _is_ids(array: pa.Array) -> bool:
    """A list column of integers without a null id inside a list: its rows compare as their values' bytes."""
    kind = array.type
    lists = pa.types.is_list(kind) or pa.types.is_large_list(kind)
    return lists and pa.types.is_integer(kind.value_type) and not array.values.null_count


def _as_binary(array: pa.ListArray | pa.LargeListArray, wide: bool) -> pa.LargeBinaryArray:
    """Each row's ids as one binary value (int32 bytes, int64 when ``wide``), over the list's own buffers (no
    copy when the ids are int32 already); a null row stays null."""
    values = array.values
    kind = pa.int64() if wide else pa.int32()
    if values.type != kind:
        values = values.cast(kind)
    width = 8 if wide else 4
    offsets = (array.offsets.to_numpy().astype(np.int64) + values.offset) * width  # into the values' own buffer
    binary = pa.LargeBinaryArray.from_buffers(pa.large_binary(), len(array), [None, pa.py_buffer(offsets),
                                              values.buffers()[1]])  # fmt: skip
    if array.null_count:
        binary = pc.if_else(array.is_valid(), binary, pa.scalar(None, pa.large_binary()))
    return binary


def row_codes_of(table: pa.Table, columns: list[str]) -> np.ndarray:
    """Per row and column, a code equal exactly where the stock sampler's ``str(value)`` keys are equal.

    Id columns (all of them, the usual case) are hashed by Arrow over their bytes: no Python object per row.
    Any other column falls back to the keys of ``_column_keys``, numbered in a dict, as before.
    """
    arrays = [table.column(c).combine_chunks() for c in columns]
    if arrays and all(_is_ids(a) for a in arrays):
        # equal lists are equal bytes at one width: int32 when every column holds int32, else int64
        wide = any(a.type.value_type != pa.int32() for a in arrays)
        keys = pa.chunked_array([_as_binary(a, wide) for a in arrays], pa.large_binary())
        encoded = pc.dictionary_encode(keys, null_encoding="encode").chunks  # one hash table over all columns
        if any(len(chunk.dictionary) != len(encoded[-1].dictionary) for chunk in encoded):  # not one dictionary
            encoded = [pc.dictionary_encode(pa.concat_arrays(keys.chunks), null_encoding="encode")]
        codes = np.concatenate([chunk.indices.to_numpy(zero_copy_only=False) for chunk in encoded])
        return codes.astype(np.int64).reshape(len(arrays), table.num_rows).T.copy()
    numbered: dict[bytes | str, int] = {}
    per_column = [[numbered.setdefault(k, len(numbered)) for k in _column_keys(table[c])] for c in columns]
    return np.array(per_column, dtype=np.int64).reshape(len(per_column), table.num_rows).T.copy()


class NoDuplicatesIdsBatchSampler(DefaultBatchSampler):
    """Batches in which no text (equal id list, across all non-label columns) appears twice.

    Rows are read as one Arrow table in the dataset's own order, through ``datasets``' public arrow format:
    a ``select``/``shuffle``/``filter`` view compares its own rows (a copy of them), a plain dataset its
    table as is (no copy). Columns listed in ``valid_label_columns`` are left out of the comparison.
    """

    def __init__(
        self,
        dataset: datasets.Dataset,
        batch_size: int,
        drop_last: bool,
        valid_label_columns: list[str] | None = None,
        generator: torch.Generator | None = None,
        seed: int = 0,
    ) -> None:
        super().__init__(dataset, batch_size, drop_last, valid_label_columns, generator, seed)
        self.dataset = dataset
        skipped = set(valid_label_columns or []) | EXCLUDED_COLUMNS
        self.columns = [name for name in dataset.column_names if name not in skipped]
        self._codes: np.ndarray | None = None

    def row_codes(self) -> np.ndarray:
        """Per row, the codes of its texts (rows x columns); built once from the Arrow table, then reused
        across epochs. A numpy array, not a Python list per row: a million rows cost 8 bytes a text."""
        if self._codes is None:
            table = self.dataset.with_format("arrow")[:]  # row i is dataset[i], views included
            self._codes = row_codes_of(table, self.columns)
        return self._codes

    def _one_pass(self, rows: np.ndarray) -> Iterator[list[int]]:
        """One shuffle, filled greedily: a row that clashes with the batch waits, in order, for a later one."""
        num_rows = len(rows)
        dtype = torch.int32 if num_rows <= np.iinfo(np.int32).max else torch.int64
        waiting = deque(torch.randperm(num_rows, generator=self.generator, dtype=dtype).tolist())
        while waiting:
            batch: list[int] = []
            seen: set[int] = set()
            deferred: list[int] = []
            while waiting:
                index = waiting.popleft()
                texts = rows[index].tolist()
                if not seen.isdisjoint(texts):
                    deferred.append(index)
                    continue
                batch.append(index)
                if len(batch) == self.batch_size:
                    break
                seen.update(texts)
            waiting.extendleft(reversed(deferred))
            if len(batch) == self.batch_size or not self.drop_last:
                yield batch

    def __iter__(self) -> Iterator[list[int]]:
        """One pass; with ``drop_last``, up to two more shuffles if it fell short of ``len(self)`` batches."""
        if self.generator and self.seed is not None:
            self.generator.manual_seed(self.seed + self.epoch)
        if len(self.dataset) == 0:
            return
        rows, expected, yielded = self.row_codes(), len(self), 0
        for batch in self._one_pass(rows):  # the first pass is never cut short
            yield batch
            yielded += 1
        if 0 < yielded < expected:
            logger.warning("one pass gave %d of %d batches; the rest are resampled", yielded, expected)
            for _ in range(RESAMPLE_PASSES):
                for batch in self._one_pass(rows):
                    yield batch
                    yielded += 1
                    if yielded >= expected:
                        return
        if yielded < expected:
            logger.warning("only %d of %d batches: too few distinct texts for this batch size", yielded, expected)

    def __len__(self) -> int:
        """The advertised count, from the sizes alone, as sentence-transformers advertises it."""
        if self.drop_last:
            return len(self.dataset) // self.batch_size
        return (len(self.dataset) + self.batch_size - 1) // self.batch_size
