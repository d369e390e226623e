"""Property-based: generated malformed NLI tables either load cleanly or fail with DataError naming
the file, and never leave a partial artifact behind."""

from __future__ import annotations

import math
import tempfile
from pathlib import Path

import pandas as pd
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tasks.pairs.labels import NLI_LABELS
from tasks.pairs.sources import load_source
from tasks.pairs.tables import DataError
from tasks.store.artifacts import materialize, write_parquet

TEXT = st.one_of(
    st.text(min_size=1, max_size=40),
    st.just(""),
    st.just("   \t "),
    st.text(min_size=2000, max_size=3000),  # very long: the tokenizer truncates, the loader keeps it
    st.none(),
    st.floats(allow_nan=True),
    st.integers(),
)
LABEL = st.one_of(
    st.sampled_from(list(NLI_LABELS)),
    st.integers(-3, 7),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from(["0", "2", "entailment", ""]),
    st.none(),
)
COLUMNS = st.lists(st.sampled_from(["premise", "hypothesis", "label", "extra", "idx"]), unique=True, max_size=5)


@st.composite
def tables(draw):
    columns = draw(COLUMNS)
    rows = draw(st.integers(0, 6))
    data = {}
    for column in columns:
        strategy = LABEL if column == "label" else TEXT
        data[column] = [draw(strategy) for _ in range(rows)]
    df = pd.DataFrame(data)
    if rows and draw(st.booleans()):
        df = pd.concat([df, df.head(1)], ignore_index=True)  # duplicated rows
    return (
        df,
        draw(st.sampled_from([".parquet", ".csv", ".tsv", ".jsonl"])),
        draw(st.sampled_from(["utf-8", "latin-1"])),
    )


def _write(df: pd.DataFrame, path: Path, encoding: str) -> None:
    if path.suffix == ".parquet" and not len(df.columns):
        path.write_bytes(b"")  # an empty file
    elif path.suffix == ".parquet":  # Parquet needs one type per column: mixed values become text
        df.astype(object).astype(str).where(df.notna(), None).to_parquet(path)
    elif path.suffix in (".csv", ".tsv"):
        text = df.to_csv(sep="\t" if path.suffix == ".tsv" else ",", index=False)
        path.write_bytes(text.encode(encoding, errors="replace"))
    else:
        text = df.to_json(orient="records", lines=True) if len(df.columns) else ""
        path.write_bytes(text.encode(encoding, errors="replace"))


def _valid_text(value) -> bool:
    return isinstance(value, str) and bool(value.strip())


@settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(tables())
def test_generated_tables_load_cleanly_or_fail_with_a_named_data_error(case):
    df, suffix, encoding = case
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / f"nli{suffix}"
        _write(df, path, encoding)
        data_dir = Path(tmp) / "data"

        def build(folder):
            return write_parquet(load_source(str(path), None).frame, folder / "pairs.parquet")

        try:
            ref = materialize(data_dir, "raw", 1, {"case": 1}, [], build)
        except DataError as error:
            assert str(path) in str(error)
            stage = data_dir / "artifacts" / "raw"
            assert not stage.exists() or not any(stage.iterdir()), "a failed load left files behind"
            return
        pairs = pd.read_parquet(ref.folder / "pairs.parquet")
        assert list(pairs.columns) == ["premise", "hypothesis", "label"]
        assert len(pairs) > 0
        assert pairs["label"].isin(list(NLI_LABELS)).all()
        assert all(_valid_text(v) for v in pairs["premise"]) and all(_valid_text(v) for v in pairs["hypothesis"])
        assert not any(isinstance(v, float) and math.isnan(v) for v in pairs["label"])
