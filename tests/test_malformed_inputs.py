"""Each input that once loaded wrong, or crashed late: read as written, or refused before any model loads with a
message naming the file (and the line, column or row at fault)."""

from __future__ import annotations

import csv
import gzip
import json
import logging
import os
import signal
from collections.abc import Callable
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tasks.pairs.labels import pairs_for_loss
from tasks.pairs.sources import check_loss_fits, load_source, source_columns
from tasks.pairs.tables import SAMPLES, DataError

NLI = ["premise", "hypothesis", "label"]


@pytest.fixture(scope="module")
def sample() -> pd.DataFrame:
    """The whole bundled MNLI sample (9,888 rows), as the flow reads it by default."""
    return pd.read_parquet(SAMPLES / "mnli" / "train.parquet")[NLI]


def glue_tsv(df: pd.DataFrame) -> str:
    """A TSV as GLUE writes its files: values joined by tabs, one line per row, no quoting."""
    return "".join("\t".join(map(str, row)) + "\n" for row in [list(df.columns), *df.itertuples(index=False)])


def refused(source: Path | str, *fragments: str, loss: str = "softmax") -> str:
    """Run the flow's checks and load on ``source``; return the DataError's message, which must name it."""
    with pytest.raises(DataError) as error:
        check_loss_fits(source_columns(str(source)), loss)
        loaded = load_source(str(source), None)
        pairs_for_loss(loaded.frame, loss, loaded.origin)
    message = str(error.value)
    assert str(source) in message
    for fragment in fragments:
        assert fragment in message, message
    return message


def within(seconds: float, call: Callable[[], object]) -> object:
    """``call()``, failed instead of hanging when it blocks (a FIFO opened for reading waits for a writer)."""

    def hung(*_):
        raise TimeoutError(f"still running after {seconds} s")

    previous = signal.signal(signal.SIGALRM, hung)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        return call()
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


# --- 1. text files read as written ---


@pytest.mark.parametrize("name", ["glue.tsv", "pandas.csv", "glue.tsv.gz", "pandas.csv.gz"])
def test_the_bundled_sample_reads_back_cell_for_cell_as_glue_tsv_and_as_csv(tmp_path, sample, name):
    """GLUE-style TSV used to load 9,859 of 9,888 rows (row 9379's opening quote swallowed 30 lines)."""
    path = tmp_path / name
    text = glue_tsv(sample) if ".tsv" in name else sample.to_csv(index=False)
    path.write_bytes(gzip.compress(text.encode()) if name.endswith(".gz") else text.encode())
    assert source_columns(str(path)) == tuple(NLI)
    loaded = load_source(str(path), None).frame
    assert len(loaded) == 9_888 and loaded.loc[9379, "premise"] == sample.loc[9379, "premise"]
    pd.testing.assert_frame_equal(loaded, sample.reset_index(drop=True), check_dtype=False)
    assert loaded["label"].dtype == "int64"


def test_an_unbalanced_csv_quote_names_the_file_and_line(tmp_path):
    path = tmp_path / "pairs.csv"
    path.write_text('premise,hypothesis,label\na,b,0\n"c,d,0\ne,f,1\n')
    refused(path, "line 3: a quoted value opened on this line never closes")


def test_a_pandas_quoted_tsv_is_refused_rather_than_read_with_its_quotes(tmp_path):
    path = tmp_path / "pandas.tsv"
    pd.DataFrame({"premise": ['He said "no"', "b"], "hypothesis": ["c", "d"], "label": [0, 1]}).to_csv(
        path, sep="\t", index=False
    )
    refused(path, "line 2", "looks CSV-quoted", "quoting=csv.QUOTE_NONE")


def test_a_tsv_value_holding_a_tab_or_line_break_is_refused_by_line(tmp_path):
    path = tmp_path / "glue.tsv"
    path.write_text("premise\thypothesis\tlabel\na\tb\t0\nc\td\te\t1\n")
    refused(path, "line 3: 4 field(s), but the header has 3", "no quoting")
    path.write_text("premise\thypothesis\tlabel\na\tb\t0\nc\nd\te\t1\n")
    refused(path, "line 3: 1 field(s)")


@pytest.mark.parametrize("suffix", [".csv", ".tsv", ".jsonl", ".json"])
def test_numeric_looking_texts_stay_text(tmp_path, suffix):
    """All-numeric text columns used to become floats (7.0 for "007") and be refused as non-text."""
    rows = pd.DataFrame({"premise": ["123", "007", "1e3", "-0"], "hypothesis": ["4.5", "1", "0.10", "+3"]})
    rows["label"] = [0, 1, 2, 0]
    path = tmp_path / f"numbers{suffix}"
    if suffix == ".tsv":
        path.write_text(glue_tsv(rows))
    elif suffix == ".csv":
        rows.to_csv(path, index=False)
    else:
        rows.to_json(path, orient="records", lines=suffix == ".jsonl", force_ascii=False)
    loaded = load_source(str(path), None).frame
    assert loaded[["premise", "hypothesis"]].to_dict("list") == rows[["premise", "hypothesis"]].to_dict("list")


def test_a_parquet_whose_premise_is_the_stored_index_reads_it_as_a_column(tmp_path, sample):
    path = tmp_path / "indexed.parquet"
    sample.head(6).set_index("premise").to_parquet(path)
    assert "premise" in source_columns(str(path))
    loaded = load_source(str(path), None).frame
    assert loaded["premise"].tolist() == sample["premise"].head(6).tolist()


@pytest.mark.parametrize("name", ["B.PARQUET", "pairs.CSV", "pairs.csv.gz", "pairs.tsv.gz", "pairs.jsonl.gz"])
def test_upper_case_and_gzipped_files_are_read(tmp_path, sample, name):
    rows = sample.head(8).reset_index(drop=True)
    path = tmp_path / name
    lower = name.lower()
    if lower.endswith(".parquet"):
        rows.to_parquet(path)
    else:
        text = rows.to_json(orient="records", lines=True) if ".jsonl" in lower else None
        text = text or (glue_tsv(rows) if ".tsv" in lower else rows.to_csv(index=False))
        path.write_bytes(gzip.compress(text.encode()) if lower.endswith(".gz") else text.encode())
    assert source_columns(str(path)) == tuple(NLI)
    pd.testing.assert_frame_equal(load_source(str(path), None).frame, rows, check_dtype=False)


def test_a_broken_gzip_file_is_named(tmp_path):
    path = tmp_path / "pairs.csv.gz"
    path.write_bytes(gzip.compress(b"premise,hypothesis,label\na,b,0\n")[:-12])
    refused(path, "not a valid gzip file")


def test_a_folder_names_what_it_skips(tmp_path, sample, caplog):
    sample.head(4).to_parquet(tmp_path / "a.parquet")
    (tmp_path / "archive").mkdir()
    (tmp_path / "notes.txt").write_text("x")
    (tmp_path / "b.xlsx").write_text("x")
    caplog.set_level(logging.WARNING)
    assert len(load_source(str(tmp_path), None).frame) == 4
    warned = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warned) == 1 and str(tmp_path) in warned[0]
    assert all(name in warned[0] for name in ("archive/", "notes.txt", "b.xlsx"))


# --- 2. crashes that become clear errors ---


def test_invalid_utf8_in_a_parquet_string_column_names_the_column_and_row(tmp_path):
    texts = pa.array([b"fine", b"\xff\xfe broken"], type=pa.binary()).view(pa.string())
    path = tmp_path / "bad.parquet"
    pq.write_table(pa.table({"premise": texts, "hypothesis": ["x", "y"], "label": [0, 1]}), path)
    refused(path, "column 'premise' row 1", "UTF8")


def test_invalid_utf8_in_a_text_file_names_the_line(tmp_path):
    path = tmp_path / "latin1.csv"
    path.write_bytes("premise,hypothesis,label\na,b,0\ncaf\u00e9,d,1\n".encode("latin-1"))
    refused(path, "line 3: invalid UTF-8")


def test_a_jsonl_that_is_one_json_array_is_refused(tmp_path):
    path = tmp_path / "records.jsonl"
    path.write_text(json.dumps([{"premise": "a", "hypothesis": "b", "label": 0}] * 3))
    refused(path, "line 1", "a JSON array of records belongs in a .json file")


def test_a_folder_mixing_negative_and_negative_1_is_refused(tmp_path):
    pd.DataFrame({"anchor": ["a", "b"], "positive": ["c", "d"], "negative": ["e", "f"]}).to_parquet(
        tmp_path / "a.parquet"
    )
    odd = tmp_path / "b.parquet"
    pd.DataFrame({"anchor": ["g", "h"], "positive": ["i", "j"], "negative_1": ["k", "l"]}).to_parquet(odd)
    for call in (source_columns, lambda s: load_source(s, None)):
        with pytest.raises(DataError, match="negative column") as error:
            call(str(tmp_path))
        assert str(odd) in str(error.value) and "'negative_1'" in str(error.value)


def test_mnr_without_entailment_rows_fails_in_the_label_mapping(tmp_path):
    path = tmp_path / "no-entailment.parquet"
    pd.DataFrame({"premise": ["a", "b"], "hypothesis": ["c", "d"], "label": [1, 2]}).to_parquet(path)
    loaded = load_source(str(path), None)
    check_loss_fits(source_columns(str(path)), "mnr", "none")
    with pytest.raises(DataError, match="no entailment rows to take positives from") as error:
        pairs_for_loss(loaded.frame, "mnr", loaded.origin)
    assert str(path) in str(error.value)


@pytest.mark.parametrize("special", ["fifo", "dev-zero"])
def test_special_files_are_refused_without_being_opened(tmp_path, special):
    path = tmp_path / ("pairs.jsonl" if special == "fifo" else "pairs.csv")
    os.mkfifo(path) if special == "fifo" else os.symlink("/dev/zero", path)
    kind = "a FIFO" if special == "fifo" else "a character device"
    for call in (source_columns, lambda s: load_source(s, None)):
        with pytest.raises(DataError, match=f"{kind}, not a regular file") as error:
            within(5, lambda c=call: c(str(path)))
        assert str(path) in str(error.value)
    with pytest.raises(DataError, match=kind):  # in a folder too, where it used to be skipped unseen
        within(5, lambda: load_source(str(tmp_path), None))


# --- 3. silently accepted, now refused or warned ---


@pytest.mark.parametrize("text", ["\u200b", "\ufeff", "\x00", "\u200b \u200c\u2060", "\u00ad", "\ufffd", "\u0301"])
def test_texts_of_invisible_characters_only_are_refused_like_empty_ones(tmp_path, text):
    path = tmp_path / "invisible.parquet"
    pd.DataFrame({"premise": ["a", "b"], "hypothesis": ["c", text], "label": [0, 1]}).to_parquet(path)
    refused(path, "column 'hypothesis' row 1", "invisible characters only")


@pytest.mark.parametrize(
    "labels",
    [[True, False], pd.to_datetime([0, 1], unit="ns"), [0, 1.5], ["0", "entailment"]],
    ids=["booleans", "timestamps", "fraction", "name"],
)
def test_labels_other_than_the_integers_0_1_2_are_refused(tmp_path, labels):
    """True used to train as neutral (1) and False as entailment (0); a timestamp as its nanoseconds."""
    path = tmp_path / "labels.parquet"
    pq.write_table(pa.table({"premise": ["a", "b"], "hypothesis": ["c", "d"], "label": pa.array(list(labels))}), path)
    refused(path, "column 'label' row", "is not a label in 0-2")


@pytest.mark.parametrize("label", [1, 1.0, "1", " 2 ", "0.0"])
def test_integral_labels_stay_accepted(tmp_path, label):
    path = tmp_path / "labels.jsonl"
    path.write_text("".join(json.dumps({"premise": p, "hypothesis": "h", "label": label}) + "\n" for p in "ab"))
    assert load_source(str(path), None).frame["label"].tolist() == [int(float(label))] * 2


@pytest.mark.parametrize("suffix", [".csv", ".tsv", ".jsonl", ".json", ".parquet"])
def test_duplicate_column_names_are_refused(tmp_path, suffix):
    path = tmp_path / f"twice{suffix}"
    header, row = ["premise", "hypothesis", "label", "label"], ["a", "b", 0, 2]
    if suffix == ".parquet":
        pq.write_table(pa.Table.from_arrays([pa.array([v]) for v in row], names=header), path)
    elif suffix in (".csv", ".tsv"):
        with open(path, "w", newline="") as handle:
            csv.writer(handle, delimiter="\t" if suffix == ".tsv" else ",").writerows([header, row])
    else:
        record = "{" + ", ".join(f"{json.dumps(k)}: {json.dumps(v)}" for k, v in zip(header, row)) + "}"
        path.write_text(record + "\n" if suffix == ".jsonl" else f"[{record}]")
    refused(path, "['label']", "more than once")


def test_pairs_whose_positive_is_the_anchor_are_dropped_with_a_warning(tmp_path, caplog):
    path = tmp_path / "pairs.parquet"
    pd.DataFrame({"anchor": ["A  dog", "x", "y"], "positive": ["a dog", "z", "w"]}).to_parquet(path)
    loaded = load_source(str(path), None)
    caplog.set_level(logging.WARNING)
    out = pairs_for_loss(loaded.frame, "mnr", loaded.origin)
    assert out.values.tolist() == [["x", "z"], ["y", "w"]]
    assert any("dropped 1 of 3 pair(s) whose positive equals the anchor" in r.getMessage() for r in caplog.records)
    pd.DataFrame({"anchor": ["Same", "b"], "positive": ["same ", "B"]}).to_parquet(path)
    refused(path, "needs at least 2 pairs", "2 whose positive equals the anchor are dropped", loss="mnr")
