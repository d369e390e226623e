"""Generated malformed inputs over every format (Parquet, TSV, CSV, JSONL, JSON, each also gzipped or with an
upper-case suffix, and folders of them), run through the validation the flow runs before any model loads:
``source_columns`` + ``check_loss_fits`` (the flow's check_source), ``load_source`` (the load stage) and
``pairs_for_loss`` (the label stage). Each input either reads back exactly as written, or is refused with a
ValueError (DataError) naming the file, and the column, row or line where one is at fault; never another
exception, never a hang. Reproducible (``derandomize``); ``-s`` prints the outcomes by kind.
"""

from __future__ import annotations

import csv
import gzip
import io
import json
import logging
import os
import re
import signal
import tempfile
from collections import Counter
from dataclasses import dataclass, field, replace
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tasks.pairs.labels import pairs_for_loss
from tasks.pairs.sources import check_loss_fits, load_source, source_columns

WELL_FORMED_EXAMPLES, FAULT_EXAMPLES, FOLDER_EXAMPLES = 40, 6, 30  # per format, per format and fault, per folder fault
OUTCOMES: Counter = Counter()
KINDS = {"nli": ["premise", "hypothesis", "label"], "pairs": ["anchor", "positive"], "triplets": ["anchor", "positive"]}
TEXT_FORMATS = ("tsv", "csv", "jsonl", "json")
# Values a reader could mistake for something else: numbers, missing-value markers, booleans, quotes, separators
TRICKY = [
    "123",
    "007",
    "1e3",
    "-0",
    "4.5",
    "nan",
    "NULL",
    "None",
    "True",
    "#N/A",
    '"quoted" start',
    'end "q"',
    "a,b",
    "it's",
    "\\N",
    "  padded  ",
    "x\x85y\u2028z",
    "\ufeffbom inside",
    "a\x00b",
    "=1+1",
    "👍🏽",
]
INVISIBLE = ["\u200b", "\ufeff", "\x00", "\u2060\u200c", " \u200b ", "\u00ad", "\x1f", "\u2028", "\u0301", "\ue000"]
CELL_FAULTS = ("empty", "blank", "null", "number", "invisible")
LABEL_FAULTS = ("bool", "fraction", "out of range", "negative", "name", "missing", "timestamp")
COLUMN_FAULTS = ("duplicate column", "missing column", "renamed column")
STRUCTURE_FAULTS = {
    "parquet": ("invalid utf8", "truncated", "index column"),
    "csv": ("unbalanced quote", "extra field", "short row", "invalid utf8", "bom"),
    "tsv": (
        "extra field",
        "short row",
        "tab in value",
        "newline in value",
        "blank line",
        "pandas quoted",
        "invalid utf8",
        "bom",
    ),
    "jsonl": ("array line", "scalar line", "broken json", "duplicate key", "whole array", "invalid utf8", "surrogate"),
    "json": ("non-object record", "ragged columns", "duplicate key", "invalid utf8", "surrogate", "columns layout"),
}
VALID_VARIANTS = {"number-in-text-file", "bom", "index column", "columns layout", "label as text", "label as float"}
CSV_QUOTED = re.compile(r'"(?:[^"]|"")*""(?:[^"]|"")*"')  # the TSV reader refuses these: quotes of a CSV writer
LINE_BREAKS = "\t\n\r"  # not in a TSV value (GLUE's files hold none); a bare \r ends a CSV line too


def core_text() -> st.SearchStrategy[str]:
    """A text with a visible character (so valid), any Unicode around it but surrogates and line breaks."""
    filler = st.text(st.characters(codec="utf-8", exclude_characters=LINE_BREAKS), max_size=10)
    core = st.sampled_from(["a", "Z", "0", "7", "é", "漢", "!", "🙂", "ß", "x y", "ك"])
    return st.one_of(st.tuples(filler, core, filler).map("".join), st.sampled_from(TRICKY))


@dataclass
class Case:
    kind: str
    header: list[str]
    rows: list[list]
    fmt: str
    compressed: bool = False
    upper: bool = False
    fault: str | None = None
    at: tuple[str, int] | None = None  # the column and row of a cell or label fault
    loss: str = "mnr"
    negatives: str = "none"
    types: dict = field(default_factory=dict)  # Parquet: the arrow type a fault gives a whole column
    stem: str = "data"

    def file_name(self) -> str:
        name = f"{self.stem}.{self.fmt}" + (".gz" if self.compressed else "")
        return name.upper() if self.upper else name


@st.composite
def tables(draw, fmt: str | None = None, fault: str | None = None, kind: str | None = None) -> Case:
    """A table of valid rows of a drawn kind, with ``fault`` (one of the lists above) put into it."""
    if kind is None and (fault in LABEL_FAULTS or fault in ("label as text", "label as float")):
        kind = "nli"
    kind = kind or draw(st.sampled_from(["pairs", "triplets"] if fault == "loss mismatch" else sorted(KINDS)))
    header = list(KINDS[kind])
    if kind == "triplets":
        header += draw(st.sampled_from([["negative"], ["negative_1", "negative_2"]]))
    header += ["extra"] if draw(st.booleans()) else []
    header = draw(st.permutations(header))
    fmt = fmt or draw(st.sampled_from(["parquet", *TEXT_FORMATS]))
    rows = draw(row_values(header, fmt, 1 if fault else 0, 6))
    if kind != "nli" and rows and draw(st.integers(0, 4)) == 0:
        rows[0][header.index("positive")] = rows[0][header.index("anchor")].upper() + " "  # its own positive
    case = Case(kind, header, rows, fmt, draw(st.booleans()) or fault == "corrupt gzip", draw(st.booleans()), fault)
    case.loss, case.negatives = draw(losses(kind, fault == "loss mismatch"))
    return inject(case, draw) if fault else case


@st.composite
def row_values(draw, header: list[str], fmt: str, least: int, most: int) -> list[list]:
    """Valid rows; in a TSV no value a CSV writer's quoting would give (the reader refuses those, by rule)."""
    rows = [
        [draw(core_text()) if c != "label" else draw(st.sampled_from([0, 1, 2])) for c in header]
        for _ in range(draw(st.integers(least, most)))
    ]
    if fmt == "tsv":
        rows = [[("a" if isinstance(v, str) and CSV_QUOTED.fullmatch(v) else v) for v in r] for r in rows]
    return rows


@st.composite
def losses(draw, kind: str, mismatch: bool) -> tuple[str, str]:
    """A loss and negatives the kind fits (``check_loss_fits``), or with ``mismatch`` one it does not."""
    if mismatch:
        return draw(
            st.sampled_from(
                [("softmax", "none"), ("cosine", "none"), ("mnr", "contradiction")]
                + [("mnr", "soft")] * (kind == "triplets")
            )
        )
    if kind == "nli":
        return draw(st.sampled_from([("softmax", "none"), ("cosine", "none"), ("mnr", "soft"), ("gist", "none")]))
    return draw(st.sampled_from([("mnr", "none"), ("gist", "none")] + [("mnr", "soft")] * (kind == "pairs")))


def inject(case: Case, draw) -> Case:
    """Put the drawn fault into the table (cells, labels, columns); file-level faults are put in by ``write``."""
    texts = [c for c in case.header if c != "label"]
    row = draw(st.integers(0, len(case.rows) - 1))
    if case.fault in CELL_FAULTS:
        column = draw(st.sampled_from([c for c in texts if c != "extra"]))
        value = {"empty": "", "blank": "  ", "null": None, "number": 123, "invisible": draw(st.sampled_from(INVISIBLE))}
        if case.fault == "number" and case.fmt == "parquet":  # one type per column: the whole column numeric
            row, case.types[column] = 0, pa.int64()
            for r in case.rows:
                r[case.header.index(column)] = 7
        case.rows[row][case.header.index(column)] = value[case.fault]
        if case.fault == "number" and case.fmt in ("csv", "tsv"):
            case.fault = "number-in-text-file"  # written as the text "123": read back as that text
        case.at = (column, row)
    elif case.fault in LABEL_FAULTS or case.fault in ("label as text", "label as float"):
        case.at = ("label", row)
        value = {
            "bool": True,
            "fraction": 1.5,
            "out of range": 3,
            "negative": -1,
            "name": "entailment",
            "missing": None,
            "timestamp": pd.Timestamp(1, unit="ns"),
            "label as text": " 1",
            "label as float": 2.0,
        }[case.fault]
        if case.fault == "timestamp" and case.fmt != "parquet":
            value = "1970-01-01 00:00:00.000000001"
        whole = {"bool": pa.bool_(), "timestamp": pa.timestamp("ns")}
        if case.fmt == "parquet" and case.fault in whole:
            case.at, case.types["label"] = ("label", 0), whole[case.fault]
            for r in case.rows:
                r[case.header.index("label")] = value
        else:
            case.rows[row][case.header.index("label")] = value
            if case.fmt == "parquet":
                case.types["label"] = {str: pa.string(), float: pa.float64()}.get(type(value), pa.int64())
                if case.types["label"] == pa.string():
                    for r in case.rows:
                        r[case.header.index("label")] = str(r[case.header.index("label")])
    elif case.fault == "duplicate column":
        column = draw(st.sampled_from(case.header))
        case.header = [*case.header, column]
        case.rows = [[*r, r[case.header.index(column)]] for r in case.rows]
        case.at = (column, 0)
    elif case.fault in ("missing column", "renamed column"):
        column = draw(st.sampled_from(KINDS[case.kind]))
        i = case.header.index(column)
        if case.fault == "missing column":
            case.header = case.header[:i] + case.header[i + 1 :]
            case.rows = [r[:i] + r[i + 1 :] for r in case.rows]
        else:
            case.header = [*case.header[:i], column.capitalize(), *case.header[i + 1 :]]
        case.at = (column, 0)
    elif case.fault in ("pandas quoted", "tab in value", "newline in value", "surrogate"):
        column = draw(st.sampled_from([c for c in texts if c != "extra" or case.fault != "surrogate"]))
        text = {
            "pandas quoted": 'say "hi"',
            "tab in value": "a\tb",
            "newline in value": draw(st.sampled_from(["a\nb", "a\n", "\nb"])),
            "surrogate": "a\ud800b",
        }[case.fault]
        case.rows[row][case.header.index(column)] = text
    return case


def cell(value) -> str:
    return "" if value is None else str(value)


def json_object(names: list[str], values: list, ascii_only: bool) -> str:
    """A JSON object written key by key, so a repeated key stays repeated."""
    return (
        "{"
        + ", ".join(f"{json.dumps(k)}: {json.dumps(v, ensure_ascii=ascii_only)}" for k, v in zip(names, values))
        + "}"
    )


def encoded(case: Case, text: str) -> bytes:
    data = text.encode("utf-8", errors="surrogatepass" if case.fault == "surrogate" else "strict")
    if case.fault == "invalid utf8":
        first = data.find(b"\n") + 1 if case.fmt != "json" else 1
        data = data[:first] + b"\xff\xfe" + data[first:]
    return (b"\xef\xbb\xbf" + data) if case.fault == "bom" else data


def parquet_bytes(case: Case) -> bytes:
    if case.fault == "index column":
        frame = pd.DataFrame(case.rows, columns=case.header).set_index(KINDS[case.kind][0])
        buffer = io.BytesIO()
        frame.to_parquet(buffer)
        return buffer.getvalue()
    arrays = []
    for i, name in enumerate(case.header):
        values = [r[i] for r in case.rows]
        kind = case.types.get(name, pa.int64() if name == "label" else pa.string())
        if case.fault == "invalid utf8" and kind == pa.string() and values:
            raw = [v.encode() for v in values[:-1]] + [b"\xff" + values[-1].encode()]
            arrays.append(pa.array(raw, type=pa.binary()).view(pa.string()))
        else:
            arrays.append(pa.array(values, type=kind))
    sink = pa.BufferOutputStream()
    pq.write_table(pa.Table.from_arrays(arrays, names=case.header), sink)
    data = sink.getvalue().to_pybytes()
    return data[: len(data) // 2] if case.fault == "truncated" else data


def text_bytes(case: Case) -> bytes:
    header, rows, fault = case.header, case.rows, case.fault
    if case.fmt == "tsv" and fault == "pandas quoted":
        return pd.DataFrame(rows, columns=header).to_csv(sep="\t", index=False).encode()
    if case.fmt == "tsv":
        lines = ["\t".join(map(cell, r)) for r in [header, *rows]]
    elif case.fmt == "csv":
        buffer = io.StringIO()
        csv.writer(buffer, lineterminator="\n").writerows([header, *[[cell(v) for v in r] for r in rows]])
        lines = buffer.getvalue().removesuffix("\n").split("\n") if buffer.getvalue() else []
    else:
        twice = fault == "duplicate key"  # the first key again, with another value
        names = [*header, header[0]] if twice else header
        records = [
            json_object(names, [*r, "other"] if twice else r, fault == "surrogate" or len(r) % 2 == 0) for r in rows
        ]
        if case.fmt == "json":
            if fault == "columns layout" or fault == "ragged columns":
                cut = 1 if fault == "ragged columns" else 0
                columns = {n: [r[i] for r in rows][cut if i == 0 else 0 :] for i, n in enumerate(header)}
                return encoded(case, json.dumps(columns))
            return encoded(case, "[" + ", ".join(records + ["5"] * (fault == "non-object record")) + "]")
        if fault == "whole array":
            return encoded(case, "[" + ", ".join(records) + "]\n")
        lines = records
        if rows:
            broken = {"array line": json.dumps(rows[0]), "scalar line": "42", "broken json": records[0][:-1]}
            lines = [broken.get(fault, records[0]), *records[1:]]
    if fault in ("extra field", "short row", "blank line", "unbalanced quote"):
        separator = "\t" if case.fmt == "tsv" else ","
        odd = {
            "extra field": separator.join(["x"] * (len(header) + 1)),
            "short row": separator.join(["x"] * (len(header) - 1)),
            "blank line": "",
            "unbalanced quote": '"' + separator.join(["x"] * len(header)),
        }[fault]
        lines = lines[:1] + [odd] + lines[1:] if fault != "unbalanced quote" else [*lines, odd]
    return encoded(case, "".join(line + "\n" for line in lines))


def write(case: Case, folder: Path) -> Path:
    path = folder / case.file_name()
    data = parquet_bytes(case) if case.fmt == "parquet" else text_bytes(case)
    if case.compressed:
        data = gzip.compress(data, mtime=0)
        data = data[: len(data) - 9] if case.fault == "corrupt gzip" else data
    path.write_bytes(data)
    return path


def as_written(case: Case) -> pd.DataFrame:
    """The rows the file holds, as the flow keeps them: the kind's columns, texts as written, labels as ints."""
    names = KINDS[case.kind] + [c for c in case.header if c.startswith("negative")]
    frame = {n: [r[case.header.index(n)] for r in case.rows] for n in names}
    for n in names:
        frame[n] = [int(float(v)) for v in frame[n]] if n == "label" else [cell(v) for v in frame[n]]
    return pd.DataFrame(frame, columns=names)


def normalised(text: str) -> str:
    return " ".join(text.lower().split())  # the negatives' rule (README), written out again on purpose


def expected_refusal(case: Case) -> list[str] | None:
    """What a refusal must say, or None when the rows must read back as written."""
    if case.fault is None or case.fault in VALID_VARIANTS:
        texts = [v for r in case.rows for c, v in zip(case.header, r) if c != "label"]
        if case.fmt == "tsv" and any(isinstance(t, str) and CSV_QUOTED.fullmatch(t) for t in texts):
            return ["looks CSV-quoted"]
        if not case.rows:  # JSON without records has no column names either
            return ["missing column"] if case.fmt in ("json", "jsonl") else ["no rows"]
        return None
    column, row = case.at or (None, None)
    if case.fault in CELL_FAULTS or case.fault in LABEL_FAULTS:
        return [f"column '{column}' row {row}"]
    return {
        "duplicate column": [f"['{column}']", "more than once"],
        "missing column": ["missing column", column],
        "renamed column": ["missing column", column],
        "loss mismatch": [],
        "truncated": [],
        "corrupt gzip": ["not a valid gzip file"],
        "invalid utf8": ["line " if case.fmt != "parquet" else "column ", "UTF"],
        "duplicate key": ["more than once"],
        "surrogate": ["lone surrogate"],
        "pandas quoted": ["looks CSV-quoted"],
        "non-object record": ["record "],
        "ragged columns": ["different lengths"],
    }.get(case.fault, ["line "])


def ranked(frame: pd.DataFrame, kind: str) -> pd.DataFrame:
    """The pairs MNR and GIST train on: entailment rows (or the source's pairs), those that are their own
    positive left out."""
    if kind == "nli":
        frame = frame[frame["label"] == 0]
        frame = pd.DataFrame({"anchor": frame["premise"].to_numpy(), "positive": frame["hypothesis"].to_numpy()})
    keep = [normalised(a) != normalised(p) for a, p in zip(frame["anchor"], frame["positive"])]
    return frame[keep].reset_index(drop=True)


def run_flow_checks(source: Path, case: Case) -> tuple[str, str]:
    """The flow's validation on ``source``: ("read back", format) or ("refused", why), checked against ``case``."""
    must_say = None if case.fault == "loss mismatch" else expected_refusal(case)
    try:
        check_loss_fits(source_columns(str(source)), case.loss, case.negatives, source=str(source))
        loaded = load_source(str(source), None)
        assert must_say is None, f"{case.fault}: accepted, expected a refusal saying {must_say}"
        assert loaded.frame.to_dict("list") == as_written(case).to_dict("list"), "rows not read back as written"
        out = pairs_for_loss(loaded.frame, case.loss, loaded.origin)
    except ValueError as error:  # DataError is one
        message = str(error)
        assert type(error).__name__ in ("ValueError", "DataError"), repr(error)
        assert str(source) in message, f"the message does not name {source}: {message}"
        late = must_say is None
        why, said = expected_late(case) if late else (case.fault or f"well-formed: {must_say[0]}", must_say)
        for fragment in said:
            assert fragment in message, f"{case.fault}: {message!r} lacks {fragment!r}"
        return "refused", why
    if case.loss in ("mnr", "gist"):
        assert out.to_dict("list") == ranked(as_written(case), case.kind).to_dict("list")
    else:
        assert len(out) == len(case.rows)
    return "read back", case.fault or "as written"


def expected_late(case: Case) -> tuple[str, list[str]]:
    """Refusals of well-formed rows, and what they say: a loss the source cannot train, or too few pairs."""
    if case.fault == "loss mismatch":
        return "loss mismatch", ["its own negatives" if case.negatives == "soft" else "needs NLI labels"]
    if case.kind == "nli" and not (as_written(case)["label"] == 0).any():
        return "well-formed: no entailment rows", ["no entailment rows to take positives from"]
    if len(ranked(as_written(case), case.kind)) < 2:
        return "well-formed: < 2 distinct pairs", ["needs at least 2 pairs"]
    return "well-formed", ["(well-formed rows that fit the loss are not refused)"]


def hang_guard(seconds: float = 10.0):
    def hung(*_):
        raise TimeoutError(f"an input took more than {seconds} s: a hang")

    signal.signal(signal.SIGALRM, hung)
    signal.setitimer(signal.ITIMER_REAL, seconds)


SETTINGS = {"deadline": None, "derandomize": True, "suppress_health_check": [HealthCheck.too_slow], "database": None}


COMMON_FAULTS = (
    *CELL_FAULTS,
    *LABEL_FAULTS,
    "label as text",
    "label as float",
    *COLUMN_FAULTS,
    "loss mismatch",
    "corrupt gzip",
)
COMBINATIONS = [(fmt, fault) for fmt in STRUCTURE_FAULTS for fault in (None, *COMMON_FAULTS, *STRUCTURE_FAULTS[fmt])]


def check_files(fmt: str, fault: str | None) -> None:
    """Every format with every fault it can hold, a few generated tables each (well-formed ones more)."""

    @settings(max_examples=FAULT_EXAMPLES if fault else WELL_FORMED_EXAMPLES, **SETTINGS)
    @given(tables(fmt=fmt, fault=fault))
    def check(case: Case) -> None:
        with tempfile.TemporaryDirectory() as tmp:
            path = write(case, Path(tmp))
            hang_guard()
            try:
                OUTCOMES[(*run_flow_checks(path, case), case.fmt + (".gz" if case.compressed else ""))] += 1
            finally:
                signal.setitimer(signal.ITIMER_REAL, 0)

    check()


FOLDER_FAULTS = ("bad file", "mixed kinds", "negative columns differ", "fifo", "dev zero", "junk entries")


@st.composite
def folders(draw, fault: str | None) -> list[Case]:
    """Two or three files of one kind, each in its own format, in file-name order, with ``fault``."""
    first = draw(tables(kind="triplets" if fault == "negative columns differ" else None))
    parts = [first]
    for _ in range(draw(st.integers(1, 2))):
        fmt = draw(st.sampled_from(["parquet", *TEXT_FORMATS]))
        rows = draw(row_values(first.header, fmt, 1, 4))
        parts.append(replace(first, rows=rows, fmt=fmt, compressed=draw(st.booleans()), upper=draw(st.booleans())))
    parts = [
        replace(p, rows=p.rows or draw(row_values(p.header, p.fmt, 1, 2)), stem=f"part-{i}")
        for i, p in enumerate(parts)
    ]
    parts.sort(key=Case.file_name)  # the order the folder is read in: the fault goes into the last file read
    if fault == "bad file":
        parts[-1] = inject(replace(parts[-1], fault=draw(st.sampled_from(CELL_FAULTS[:3]))), draw)
    elif fault == "mixed kinds":
        other = draw(tables(fmt=parts[-1].fmt, kind="pairs" if first.kind == "nli" else "nli"))
        rows = other.rows or draw(row_values(other.header, other.fmt, 1, 2))
        parts[-1] = replace(
            other, rows=rows, stem=parts[-1].stem, upper=parts[-1].upper, compressed=parts[-1].compressed
        )
    elif fault == "negative columns differ":
        renamed = next(c for c in first.header if c.startswith("negative"))
        parts[-1] = replace(parts[-1], header=["negative_9" if c == renamed else c for c in first.header])
    return parts


def check_folder_outcome(folder: Path, parts: list[Case], fault: str | None, files: list[Path], warned: list[str]):
    base = parts[0]
    try:
        check_loss_fits(source_columns(str(folder)), base.loss, base.negatives, source=str(folder))
        loaded = load_source(str(folder), None)
        assert fault in (None, "junk entries"), f"{fault}: accepted"
        expected = pd.concat([as_written(p) for p in parts], ignore_index=True)
        assert loaded.frame.to_dict("list") == expected.to_dict("list"), "rows not read back as written"
        out = pairs_for_loss(loaded.frame, base.loss, loaded.origin)
        if base.loss in ("mnr", "gist"):
            whole = replace(base, rows=[r for p in parts for r in p.rows], fault=None)
            assert out.to_dict("list") == ranked(as_written(whole), base.kind).to_dict("list")
        if fault == "junk entries":
            assert any(all(name in w for name in ("sub/", "notes.txt", ".hidden")) for w in warned), warned
        return "read back", fault or "as written"
    except ValueError as error:
        message = str(error)
        assert type(error).__name__ in ("ValueError", "DataError"), repr(error)
        assert str(folder) in message, f"the message does not name {folder}: {message}"
        said = {
            "bad file": [str(files[-1]), f"column '{parts[-1].at[0]}' row {parts[-1].at[1]}"] if parts[-1].at else [],
            "mixed kinds": [str(files[-1]), "same kind"],
            "negative columns differ": [str(files[-1]), "negative"],
            "fifo": ["a FIFO, not a regular file"],
            "dev zero": ["a character device, not a regular file"],
        }
        why = fault
        if fault in (None, "junk entries"):  # well-formed files: only the rows as a whole can be refused
            whole = replace(base, rows=[r for p in parts for r in p.rows], fault=None)
            why, said[fault] = expected_late(whole)
        for fragment in said.get(fault, []):
            assert fragment in message, f"{fault}: {message!r} lacks {fragment!r}"
        return "refused", why


def check_folders(fault: str | None) -> None:
    """Folders of well-formed files, or with one of ``FOLDER_FAULTS``."""

    @settings(max_examples=FOLDER_EXAMPLES, **SETTINGS)
    @given(folders(fault))
    def check(parts: list[Case]) -> None:
        check_a_folder(parts, fault)

    check()


def check_a_folder(parts: list[Case], fault: str | None) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "source"
        folder.mkdir()
        files = [write(p, folder) for p in parts]
        if fault == "junk entries":
            (folder / "sub").mkdir()
            (folder / "notes.txt").write_text("x")
            (folder / ".hidden").write_text("x")
        elif fault in ("fifo", "dev zero"):
            special = folder / ("zz.jsonl" if fault == "fifo" else "zz.csv")
            os.mkfifo(special) if fault == "fifo" else os.symlink("/dev/zero", special)
        records: list[str] = []
        handler = logging.Handler()
        handler.emit = lambda record: records.append(record.getMessage())
        logging.getLogger("tasks.pairs").addHandler(handler)
        hang_guard()
        try:
            OUTCOMES[(*check_folder_outcome(folder, parts, fault, files, records), "folder")] += 1
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
            logging.getLogger("tasks.pairs").removeHandler(handler)


def test_generated_inputs_read_back_as_written_or_are_refused_by_name():
    OUTCOMES.clear()
    for fmt, fault in COMBINATIONS:
        check_files(fmt, fault)
    for fault in (None, *FOLDER_FAULTS):
        check_folders(fault)
    total = sum(OUTCOMES.values())
    by_outcome = Counter()
    for (outcome, _, _), count in OUTCOMES.items():
        by_outcome[outcome] += count
    print(f"\n{total} generated inputs: {dict(by_outcome)}")
    for (outcome, why, where), count in sorted(OUTCOMES.items()):
        print(f"  {outcome:9} {why:24} {where:12} {count}")
    assert total >= 500
    assert by_outcome["read back"] >= 100 and by_outcome["refused"] >= 100
