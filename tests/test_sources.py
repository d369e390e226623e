"""Loading and validating NLI input: every supported format, every bad-input case."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from tasks.pairs.sources import load_nli_pairs, resolve_local, source_fingerprint, validate_nli
from tasks.pairs.tables import DataError


def _write(df: pd.DataFrame, path):
    if path.suffix == ".parquet":
        df.to_parquet(path)
    elif path.suffix == ".tsv":
        df.to_csv(path, sep="\t", index=False)
    elif path.suffix == ".csv":
        df.to_csv(path, index=False)
    else:
        df.to_json(path, orient="records", lines=True)
    return path


@pytest.mark.parametrize("suffix", [".parquet", ".tsv", ".csv", ".jsonl"])
def test_each_local_format_loads_the_same_pairs(tmp_path, nli_sample, suffix):
    path = _write(nli_sample[["premise", "hypothesis", "label"]], tmp_path / f"nli{suffix}")
    pairs, origin = load_nli_pairs(str(path), max_pairs=None)
    assert list(pairs.columns) == ["premise", "hypothesis", "label"]
    assert len(pairs) == len(nli_sample)
    assert pairs["label"].dtype == "int64"
    assert pairs["premise"].tolist() == nli_sample["premise"].tolist()
    assert origin == f"local:{path}"


def test_max_pairs_takes_the_first_rows(nli_file, nli_sample):
    pairs, _ = load_nli_pairs(str(nli_file), max_pairs=7)
    assert pairs["hypothesis"].tolist() == nli_sample["hypothesis"].head(7).tolist()


def test_a_folder_uses_its_train_file(tmp_path, nli_sample):
    _write(nli_sample.head(5)[["premise", "hypothesis", "label"]], tmp_path / "train.parquet")
    _write(nli_sample.head(3)[["premise", "hypothesis", "label"]], tmp_path / "validation.parquet")
    assert resolve_local(str(tmp_path)).name == "train.parquet"
    assert len(load_nli_pairs(str(tmp_path), None)[0]) == 5


def test_fingerprint_follows_file_content(nli_file, nli_sample):
    before = source_fingerprint(str(nli_file))
    assert before == source_fingerprint(str(nli_file))
    nli_sample.head(10)[["premise", "hypothesis", "label"]].to_parquet(nli_file)
    assert source_fingerprint(str(nli_file))["sha256"] != before["sha256"]


def test_glue_first_rows_keep_their_labels():
    pairs, _ = load_nli_pairs("data/samples/mnli/glue_train_first5.parquet", None)
    assert pairs["label"].tolist() == [1, 0, 0, 0, 1]
    assert pairs.loc[2, "premise"] == "One of our number will carry out your instructions minutely."


BAD_TABLES = {
    "missing column": (pd.DataFrame({"premise": ["a"], "label": [0]}), ["missing column", "hypothesis"]),
    "label outside 0-2": (
        pd.DataFrame({"premise": ["a", "b"], "hypothesis": ["c", "d"], "label": [0, 5]}),
        ["column 'label' row 1", "not a label in 0-2"],
    ),
    "negative label": (
        pd.DataFrame({"premise": ["a"], "hypothesis": ["c"], "label": [-1]}),
        ["column 'label' row 0"],
    ),
    "text label": (
        pd.DataFrame({"premise": ["a"], "hypothesis": ["c"], "label": ["entailment"]}),
        ["column 'label' row 0"],
    ),
    "empty premise": (
        pd.DataFrame({"premise": ["a", "  "], "hypothesis": ["c", "d"], "label": [0, 1]}),
        ["column 'premise' row 1", "empty"],
    ),
    "missing hypothesis": (
        pd.DataFrame({"premise": ["a", "b"], "hypothesis": [None, "d"], "label": [0, 1]}),
        ["column 'hypothesis' row 0"],
    ),
    "no rows": (pd.DataFrame({"premise": [], "hypothesis": [], "label": []}), ["no rows"]),
}


@pytest.mark.parametrize("case", sorted(BAD_TABLES))
def test_bad_tables_name_file_column_row_and_problem(tmp_path, case):
    df, expected = BAD_TABLES[case]
    path = _write(df, tmp_path / "bad.parquet")
    with pytest.raises(DataError) as error:
        load_nli_pairs(str(path), None)
    message = str(error.value)
    assert str(path) in message
    for fragment in expected:
        assert fragment in message


def test_missing_file_is_named(tmp_path):
    with pytest.raises(DataError, match="nope.parquet: file not found"):
        load_nli_pairs(str(tmp_path / "nope.parquet"), None)


def test_unreadable_file_is_named(tmp_path):
    path = tmp_path / "broken.parquet"
    path.write_bytes(b"this is not parquet")
    with pytest.raises(DataError, match="broken.parquet: cannot read .parquet file"):
        load_nli_pairs(str(path), None)


def test_unsupported_type_is_named(tmp_path):
    path = tmp_path / "pairs.xlsx"
    path.write_text("x")
    with pytest.raises(DataError, match="unsupported file type '.xlsx'"):
        load_nli_pairs(str(path), None)


def test_malformed_jsonl_is_named(tmp_path):
    path = tmp_path / "pairs.jsonl"
    path.write_text(json.dumps({"premise": "a", "hypothesis": "b", "label": 0}) + "\n{not json\n")
    with pytest.raises(DataError, match="pairs.jsonl: cannot read"):
        load_nli_pairs(str(path), None)


def test_validate_keeps_only_the_three_columns():
    df = pd.DataFrame({"premise": ["a"], "hypothesis": ["b"], "label": [2.0], "extra": [1]})
    out = validate_nli(df, "x")
    assert list(out.columns) == ["premise", "hypothesis", "label"]
    assert out["label"].tolist() == [2]


@pytest.fixture()
def glue_hub_copy(tmp_path, monkeypatch):
    """A local copy of the GLUE dataset repo in the hub's layout (the hub itself is unreachable)."""
    first5 = pd.read_parquet("data/samples/mnli/glue_train_first5.parquet")
    (tmp_path / "mnli").mkdir()
    first5.to_parquet(tmp_path / "mnli" / "train-00000-of-00001.parquet")
    (tmp_path / "README.md").write_text(
        "---\nconfigs:\n- config_name: mnli\n  data_files:\n  - split: train\n    path: mnli/train-*\n---\n"
    )
    monkeypatch.setenv("TRAIN_EMBEDDINGS_GLUE_REPO", str(tmp_path))
    return tmp_path


def test_hub_source_loads_through_datasets_like_the_seed(glue_hub_copy):
    pairs, origin = load_nli_pairs("glue/mnli", max_pairs=3)
    assert origin == f"hub:{glue_hub_copy}/mnli"
    assert list(pairs.columns) == ["premise", "hypothesis", "label"]
    assert pairs["label"].tolist() == [1, 0, 0]
    assert pairs.loc[2, "hypothesis"].startswith("A member of my team will execute your orders")
    assert source_fingerprint("glue/mnli") == {
        "kind": "hub",
        "repo": str(glue_hub_copy),
        "config": "mnli",
        "split": "train",
    }
