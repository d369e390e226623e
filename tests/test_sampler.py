"""Our no-duplicates sampler: the same batches as sentence-transformers' own, never one text twice in
a batch, built the way the trainer builds it, and a select/shuffle/filter view read through its own rows."""

from __future__ import annotations

from types import SimpleNamespace

import datasets
import numpy as np
import pyarrow as pa
import pytest
import torch
from datasets.table import InMemoryTable
from sentence_transformers.base.sampler import NoDuplicatesBatchSampler
from sentence_transformers.sentence_transformer.trainer import SentenceTransformerTrainer
from sentence_transformers.sentence_transformer.training_args import SentenceTransformerTrainingArguments

from tasks.training.sampler import NoDuplicatesIdsBatchSampler

LABELS = ["label", "labels", "score", "scores"]  # what the trainer's collator passes by default


def ids_table(rows: int, distinct: int, seed: int, label: bool = False, quirks: bool = False) -> pa.Table:
    """anchor/positive/negative int32 id lists drawn from ``distinct`` texts: many repeats, within and
    across rows and columns. ``quirks``: an int64 column, null rows, an empty text, several chunks."""
    rng = np.random.default_rng(seed)
    texts = [rng.integers(100, 30_000, size=rng.integers(1, 9)).tolist() for _ in range(distinct)]
    if quirks:
        texts[0] = []
    columns = {name: [texts[i] for i in rng.integers(0, distinct, size=rows)] for name in ("anchor", "positive")}
    columns["negative"] = [
        texts[i] if rng.random() > 0.3 else a for i, a in zip(rng.integers(0, distinct, rows), columns["anchor"])
    ]
    types = {"anchor": pa.int32(), "positive": pa.int32(), "negative": pa.int64() if quirks else pa.int32()}
    arrays = {name: pa.array(values, pa.list_(types[name])) for name, values in columns.items()}
    if quirks:
        nulls = [None if i % 37 == 5 else text for i, text in enumerate(columns["positive"])]
        arrays["positive"] = pa.array(nulls, pa.list_(pa.int32()))
    if label:
        arrays["label"] = pa.array(rng.integers(0, 3, size=rows), pa.int64())
    table = pa.table(arrays)
    if quirks:
        table = pa.concat_tables([table.slice(0, rows // 3), table.slice(rows // 3)])
    return table


def as_dataset(table: pa.Table) -> datasets.Dataset:
    return datasets.Dataset(InMemoryTable(table))


def epochs(sampler, count: int = 2) -> list[list[list[int]]]:
    out = []
    for epoch in range(count):
        sampler.set_epoch(epoch)
        out.append(list(sampler))
    return out


@pytest.mark.parametrize("label, quirks", [(False, False), (True, False), (False, True)])
@pytest.mark.parametrize("drop_last", [False, True])
def test_same_batches_as_sentence_transformers(label: bool, quirks: bool, drop_last: bool) -> None:
    resampled = False
    for distinct, rows in [(60, 300), (400, 500), (12, 90), (8, 100)]:  # (8, 100): three passes at times
        dataset = as_dataset(ids_table(rows, distinct, seed=distinct, label=label, quirks=quirks))
        for seed in (0, 1, 42):
            for batch_size in (2, 4, 7, 16, 32):
                kwargs = {"batch_size": batch_size, "drop_last": drop_last, "valid_label_columns": LABELS, "seed": seed}
                stock = epochs(NoDuplicatesBatchSampler(dataset, generator=torch.Generator(), **kwargs))
                ours = epochs(NoDuplicatesIdsBatchSampler(dataset, generator=torch.Generator(), **kwargs))
                assert ours == stock, (distinct, rows, seed, batch_size)
                assert stock[0] != stock[1] or not stock[0]  # the epoch reseeds (when anything fits)
                resampled |= any(len({i for b in epoch for i in b}) < sum(map(len, epoch)) for epoch in stock)
    assert resampled == drop_last  # with drop_last, some cases need the extra shuffled passes


def test_same_batches_without_a_generator() -> None:
    """No generator: both draw from torch's global generator, and so still agree."""
    dataset = as_dataset(ids_table(200, 50, seed=3))
    kwargs = {"batch_size": 8, "drop_last": False, "valid_label_columns": LABELS}
    torch.manual_seed(5)
    stock = epochs(NoDuplicatesBatchSampler(dataset, **kwargs))
    torch.manual_seed(5)
    assert epochs(NoDuplicatesIdsBatchSampler(dataset, **kwargs)) == stock


@pytest.mark.parametrize("quirks", [False, True])
def test_no_batch_holds_a_text_twice(quirks: bool) -> None:
    table = ids_table(400, 80, seed=7, label=True, quirks=quirks)
    columns = {name: table.column(name).to_pylist() for name in ("anchor", "positive", "negative")}
    sampler = NoDuplicatesIdsBatchSampler(as_dataset(table), batch_size=16, drop_last=False, valid_label_columns=LABELS)
    batches = list(sampler)
    assert sorted(i for b in batches for i in b) == list(range(400))  # one pass: every row exactly once
    for batch in batches:
        texts = [{str(columns[name][row]) for name in columns} for row in batch]  # a row may repeat its own text
        assert sum(map(len, texts)) == len(set().union(*texts)), batch
    # the label column is not compared: with it, batches could hold at most 3 rows
    assert max(map(len, batches)) == 16


def test_labels_are_compared_when_not_named_label_columns() -> None:
    dataset = as_dataset(ids_table(60, 500, seed=1, label=True))
    kwargs = {"batch_size": 8, "drop_last": False, "valid_label_columns": ["score"], "seed": 0}
    ours = list(NoDuplicatesIdsBatchSampler(dataset, generator=torch.Generator(), **kwargs))
    assert ours == list(NoDuplicatesBatchSampler(dataset, generator=torch.Generator(), **kwargs))
    assert max(map(len, ours)) <= 3  # three label values, each at most once per batch


def test_built_the_way_the_trainer_builds_it(tmp_path) -> None:
    args = SentenceTransformerTrainingArguments(output_dir=str(tmp_path), batch_sampler=NoDuplicatesIdsBatchSampler)
    dataset = as_dataset(ids_table(120, 40, seed=2, label=True))
    generator = torch.Generator()
    sampler = SentenceTransformerTrainer.get_batch_sampler(
        SimpleNamespace(args=args), dataset, 8, False, valid_label_columns=LABELS, generator=generator, seed=args.seed
    )
    assert type(sampler) is NoDuplicatesIdsBatchSampler
    loader = torch.utils.data.DataLoader(dataset, batch_sampler=sampler, collate_fn=len)
    assert len(loader) == 15 and sum(loader) == 120
    stock = NoDuplicatesBatchSampler(dataset, 8, False, LABELS, generator=torch.Generator(), seed=args.seed)
    assert list(sampler) == list(stock)


def test_a_view_after_select_shuffle_or_filter_gives_the_stock_batches_of_its_own_rows() -> None:
    """A view's rows are its own (row i is ``view[i]``), read through datasets' public arrow format, not the
    table under the view: the batches are the stock sampler's, which reads ``view[i]`` too."""
    dataset = as_dataset(ids_table(50, 20, seed=4))
    kwargs = {"batch_size": 4, "drop_last": False, "seed": 9}
    for view in (
        dataset.select([5, 3, 8, 1, 5, 9, 12, 30, 31, 2]),
        dataset.shuffle(seed=0),
        dataset.filter(lambda row: len(row["anchor"]) > 3),
        dataset.shuffle(seed=1).flatten_indices(),
    ):
        ours = NoDuplicatesIdsBatchSampler(view, generator=torch.Generator(), **kwargs)
        assert list(ours) == list(NoDuplicatesBatchSampler(view, generator=torch.Generator(), **kwargs))
        rows = ours.row_codes()
        anchors = view["anchor"]
        assert len(rows) == len(view)
        assert all(
            (rows[i][0] == rows[j][0]) == (anchors[i] == anchors[j])
            for i in range(9)
            for j in range(9)
            if max(i, j) < len(view)
        )
