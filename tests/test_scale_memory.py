"""The Arrow-native tokens stage and sampler codes give exactly what the per-row Python code gave: the same
token ids per text, the same codes up to renaming, from a DataFrame, an Arrow table or a Parquet file."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from sentence_transformers import SentenceTransformer

from tasks.negatives.strategies import MiningConfig, soft_negatives
from tasks.pairs.labels import pairs_for_loss
from tasks.training import tokens
from tasks.training.sampler import _column_keys, row_codes_of


def reference_ids(model, texts: list[str]) -> list[list[int]]:
    """Each text tokenised on its own by the model's preprocess, its padding cut off: what the stage stores."""
    out = []
    for text in texts:
        with tokens.padded(model):
            features = model.preprocess([text])
        ids, mask = features["input_ids"][0].tolist(), features["attention_mask"][0].tolist()
        out.append([i for i, m in zip(ids, mask) if m])
    return out


@pytest.fixture(scope="module")
def model(tiny_bert) -> SentenceTransformer:
    return SentenceTransformer(str(tiny_bert))


@pytest.fixture(scope="module")
def mnr(nli_sample) -> pd.DataFrame:
    frame = soft_negatives(pairs_for_loss(nli_sample.head(300), "mnr"), nli_sample.head(300), MiningConfig())
    return frame.assign(positive_score=0.5)  # a column the loss does not read


@pytest.mark.parametrize("chunk", [7, 4096])
def test_token_ids_are_each_texts_own_from_a_frame_a_table_and_a_file(model, mnr, tmp_path, chunk) -> None:
    table = pa.Table.from_pandas(mnr, preserve_index=False)
    pq.write_table(table, tmp_path / "t.parquet", row_group_size=50)  # several row groups, several chunks
    made = [
        tokens.tokenize_frame(mnr, "mnr", model, chunk=chunk),
        tokens.tokenize_frame(pq.read_table(tmp_path / "t.parquet"), "mnr", model, chunk=chunk),
        tokens.tokenize_file(tmp_path / "t.parquet", "mnr", model),
    ]
    for out in made:
        assert out.column_names == ["anchor_input_ids", "positive_input_ids", "negative_input_ids"]
        for column in ("anchor", "positive", "negative"):
            assert out.column(f"{column}{tokens.SUFFIX}").to_pylist() == reference_ids(model, mnr[column].tolist())
    assert made[0].equals(made[1]) and made[0].equals(made[2])


@pytest.mark.parametrize("loss", ["cosine", "softmax"])
def test_labels_and_scores_keep_their_values_and_types(model, nli_sample, tmp_path, loss) -> None:
    frame = pairs_for_loss(nli_sample.head(120), loss)
    frame.to_parquet(tmp_path / "p.parquet")
    from_frame = tokens.tokenize_frame(frame, loss, model)
    from_file = tokens.tokenize_file(tmp_path / "p.parquet", loss, model)
    label = "score" if loss == "cosine" else "label"
    assert from_frame.column(label).to_pylist() == frame[label].tolist()
    assert from_frame.schema == from_file.schema and from_frame.equals(from_file)
    assert from_frame.column(label).type == pa.array(frame[label].to_numpy()).type


def test_a_missing_text_column_is_named(model, nli_sample) -> None:
    with pytest.raises(ValueError, match="column 'sentence2' is missing"):
        tokens.tokenize_frame(pa.table({"sentence1": ["a"], "score": [1.0]}), "cosine", model)


def reference_codes(table: pa.Table, columns: list[str]) -> np.ndarray:
    """The sampler's earlier numbering: one Python key per row, numbered in a dict in first-seen order."""
    numbered: dict = {}
    per_column = [[numbered.setdefault(k, len(numbered)) for k in _column_keys(table[c])] for c in columns]
    return np.array(per_column, dtype=np.int64).reshape(len(columns), table.num_rows).T


def same_partition(a: np.ndarray, b: np.ndarray) -> bool:
    """Equal exactly where the other is equal: the same codes up to renaming."""
    pairs = set(zip(a.ravel().tolist(), b.ravel().tolist()))
    return len(pairs) == len({x for x, _ in pairs}) == len({y for _, y in pairs})


def id_lists(rng: np.random.Generator, rows: int, texts: list[list[int]], kind: pa.DataType, nulls: bool) -> pa.Array:
    values = [None if nulls and i % 11 == 3 else texts[j] for i, j in enumerate(rng.integers(0, len(texts), rows))]
    return pa.array(values, pa.list_(kind))


@pytest.mark.parametrize("mixed, nulls, sliced", [(False, False, False), (True, False, False), (False, True, True)])
def test_row_codes_equal_where_the_python_keys_are_equal(mixed: bool, nulls: bool, sliced: bool) -> None:
    rng = np.random.default_rng(0)
    texts = [rng.integers(0, 30_000, rng.integers(0, 6)).tolist() for _ in range(40)]  # [] among them
    kinds = [pa.int32(), pa.int64() if mixed else pa.int32(), pa.int32()]
    table = pa.table({name: id_lists(rng, 500, texts, kind, nulls) for name, kind in zip("apn", kinds)})
    if sliced:  # chunks that start inside their buffers, as a shuffled or sliced table has
        table = pa.concat_tables([table.slice(3, 200), table.slice(250, 180)])
    for part in (table, table.slice(7, 150)):  # a slice: its arrays start inside their buffers
        codes = row_codes_of(part, ["a", "p", "n"])
        assert codes.shape == (part.num_rows, 3)
        assert same_partition(codes, reference_codes(part, ["a", "p", "n"]))


def test_a_column_that_is_not_ids_is_compared_as_python_spells_it() -> None:
    table = pa.table({"a": pa.array([[1, 2], None, [3]], pa.list_(pa.int32())), "label": [0, 1, 0]})
    codes = row_codes_of(table, ["a", "label"])
    assert same_partition(codes, reference_codes(table, ["a", "label"]))
    assert codes[0, 1] == codes[2, 1] != codes[1, 1]
