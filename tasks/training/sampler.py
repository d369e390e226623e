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
    kind = array.type
    ids = (pa.types.is_list(kind) or pa.types.is_large_list(kind)) and pa.types.is_integer(kind.value_type)
    if not ids or array.values.null_count:  # another column, or a null id inside a list: Python spells it
        return [str(value) for value in array.to_pylist()]
    buffer = array.values.to_numpy().astype(np.int64, copy=False).tobytes()
    bounds = (array.offsets.to_numpy().astype(np.int64) * 8).tolist()
    keys: list[bytes | str] = [buffer[a:b] for a, b in zip(bounds[:-1], bounds[1:])]
    if array.null_count:
        keys = [key if valid else "None" for key, valid in zip(keys, array.is_valid().to_pylist())]
    return keys


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
        self._rows: list[list[int]] | None = None

    def row_codes(self) -> list[list[int]]:
        """Per row, the codes of its texts; built once from the Arrow table, then reused across epochs."""
        if self._rows is None:
            table = self.dataset.with_format("arrow")[:]  # row i is dataset[i], views included
            codes: dict[bytes | str, int] = {}
            per_column = [[codes.setdefault(k, len(codes)) for k in _column_keys(table[c])] for c in self.columns]
            self._rows = np.array(per_column, dtype=np.int64).reshape(len(per_column), table.num_rows).T.tolist()
        return self._rows

    def _one_pass(self, rows: list[list[int]]) -> Iterator[list[int]]:
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
                if not seen.isdisjoint(rows[index]):
                    deferred.append(index)
                    continue
                batch.append(index)
                if len(batch) == self.batch_size:
                    break
                seen.update(rows[index])
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
