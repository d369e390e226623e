"""How each input format's bytes become rows, read as the format's writers write them.

TSV is read as GLUE writes it (``"\\t".join``, no quoting: a quote is text), CSV by RFC 4180 (as
Python's csv and pandas write it), JSONL as one JSON object per line, JSON as an array of records
or pandas' column layout, Parquet through pyarrow with its strings checked as UTF-8. Every value of
a text format stays the text written (``"007"`` is not 7), and every failure names the line, record
or column at fault; ``tables`` adds the file.
"""

from __future__ import annotations

import csv
import io
import json
import re
from collections import Counter

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

csv.field_size_limit(2**31 - 1)  # a long text, or an unbalanced quote, must not stop at csv's 128 KiB per value
DIALECTS = {
    "tsv": {"delimiter": "\t", "quoting": csv.QUOTE_NONE, "strict": True},
    "csv": {"delimiter": ",", "quotechar": '"', "doublequote": True, "strict": True},
}
TSV_HINT = (
    ".tsv is read as GLUE writes it: one line per row, tab-separated, no quoting (a value holds no tab or line break)"
)
CSV_QUOTED = re.compile(r'"(?:[^"]|"")*""(?:[^"]|"")*"')  # a CSV-quoted value with a doubled quote inside
UTF8_INDEX = re.compile(r"string index (\d+)")


class FormatError(ValueError):
    """A malformed input; the message names the line, record or column, not yet the file."""


def duplicates(names: list[str]) -> list[str]:
    return [name for name, count in Counter(names).items() if count > 1]


def require_unique(names: list[str], where: str = "") -> None:
    """Two columns of one name: which one a reader keeps differs by format, so neither is taken."""
    twice = duplicates(names)
    if twice:
        raise FormatError(f"{where}column name(s) {twice} appear more than once; each column needs its own name")


def decode(data: bytes) -> str:
    """UTF-8 text (a leading byte-order mark dropped); invalid bytes named by line."""
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise FormatError(f"line {line}: invalid UTF-8 (byte {data[exc.start]:#04x} at offset {exc.start})") from None


def delimited_records(text: str, fmt: str, header_only: bool = False) -> tuple[list[str], list[list[str]]]:
    """Header and rows of a CSV or TSV, each row checked to hold the header's fields. A blank line is no CSV
    record (a CSV writer quotes an empty lone value), but in a TSV it may be a value's line break: refused."""
    reader = csv.reader(io.StringIO(text, newline=""), **DIALECTS[fmt])
    rows: list[list[str]] = []
    header: list[str] | None = None
    start = 1
    try:
        for row in reader:
            if not row and fmt == "csv":
                pass
            elif header is None:
                header = row
                check_header(header, start)
                if header_only:
                    break
            else:
                check_fields(row, len(header), start, fmt)
                rows.append(row)
            start = reader.line_num + 1
    except csv.Error as exc:
        if "end of data" in str(exc):
            raise FormatError(f"line {start}: a quoted value opened on this line never closes ({exc})") from None
        raise FormatError(
            f"line {start}: {exc} (RFC 4180: a value holding a quote is quoted, its quotes doubled)"
        ) from None
    if header is None:
        raise FormatError("empty file: no header line")
    return header, rows


def check_header(header: list[str], line: int) -> None:
    if not header:
        raise FormatError(f"line {line}: a blank line where the header belongs; {TSV_HINT}")
    require_unique(header, f"line {line}: ")


def check_fields(row: list[str], expected: int, line: int, fmt: str) -> None:
    if len(row) != expected:
        shown = "a blank line" if not row else f"{len(row)} field(s)"
        hint = f"; {TSV_HINT}" if fmt == "tsv" else ""
        raise FormatError(f"line {line}: {shown}, but the header has {expected}{hint}")
    if fmt == "tsv":
        quoted = next((value for value in row if value[:1] == '"' and CSV_QUOTED.fullmatch(value)), None)
        if quoted is not None:
            raise FormatError(
                f"line {line}: value {quoted[:60]!r} looks CSV-quoted (doubled quotes inside a quoted value); "
                f"{TSV_HINT}, so its quotes would stay in the text: write it with quoting=csv.QUOTE_NONE, or as .csv"
            )


def read_delimited(data: bytes, fmt: str) -> pd.DataFrame:
    header, rows = delimited_records(decode(data), fmt)
    return pd.DataFrame({name: [row[i] for row in rows] for i, name in enumerate(header)}, dtype=object)


def unique_keys(pairs: list[tuple[str, object]]) -> dict:
    """A JSON object whose keys are unique (json keeps the last of two silently)."""
    twice = duplicates([key for key, _ in pairs])
    if twice:
        raise FormatError(f"key(s) {twice} appear more than once in one record; readers keep one or the other")
    return dict(pairs)


def json_value(text: str, where: str) -> object:
    try:
        return json.loads(text, object_pairs_hook=unique_keys)
    except json.JSONDecodeError as exc:
        at = f"column {exc.colno}" if where else f"line {exc.lineno}, column {exc.colno}"
        raise FormatError(f"{where}not JSON: {exc.msg} ({at})") from None
    except FormatError as exc:
        raise FormatError(f"{where}{exc}") from None
    except RecursionError:
        raise FormatError(f"{where}JSON nested too deeply") from None


def jsonl_records(text: str, first_only: bool = False) -> list[dict]:
    """One JSON object per non-blank line (split on line feeds only: U+2028 may sit inside a string)."""
    records = []
    for number, line in enumerate(text.split("\n"), start=1):
        if not line.strip():
            continue
        record = json_value(line, f"line {number}: ")
        if not isinstance(record, dict):
            raise FormatError(
                f"line {number}: a JSON {type(record).__name__}, but each line of a .jsonl file must be one "
                "JSON object (a record); a JSON array of records belongs in a .json file"
            )
        records.append(record)
        if first_only:
            break
    return records


def records_frame(records: list[dict]) -> pd.DataFrame:
    """Records as columns, in the order keys first appear; a key a record lacks is a missing value there."""
    names = list(dict.fromkeys(key for record in records for key in record))
    return pd.DataFrame({name: [record.get(name) for record in records] for name in names}, dtype=object)


def read_jsonl(data: bytes) -> pd.DataFrame:
    return records_frame(jsonl_records(decode(data)))


def read_json(data: bytes) -> pd.DataFrame:
    """An array of records (``to_json(orient="records")``) or columns of values (``to_json()``'s default)."""
    value = json_value(decode(data), "")
    if isinstance(value, list):
        odd = next((i for i, record in enumerate(value) if not isinstance(record, dict)), None)
        if odd is not None:
            raise FormatError(f"record {odd}: a JSON {type(value[odd]).__name__}, not an object")
        return records_frame(value)
    if not isinstance(value, dict):
        raise FormatError(f"a JSON {type(value).__name__}; expected an array of records or an object of columns")
    columns = list(value.values())
    if columns and all(isinstance(c, dict) for c in columns):
        keys = list(columns[0])
        odd = next((name for name, c in value.items() if set(c) != set(keys)), None)
        if odd is not None:
            raise FormatError(f"column {odd!r} has other row keys than column {next(iter(value))!r}")
        return pd.DataFrame({name: [c[k] for k in keys] for name, c in value.items()}, dtype=object)
    if all(isinstance(c, list) for c in columns):
        lengths = {name: len(c) for name, c in value.items()}
        if len(set(lengths.values())) > 1:
            raise FormatError(f"columns of different lengths {lengths}")
        return pd.DataFrame(value, dtype=object)
    raise FormatError("an object whose values are not all lists or all objects; expected columns of values")


def check_utf8(table: pa.Table, first_row: int = 0) -> None:
    """Parquet stores strings unchecked; invalid UTF-8 would fail deep inside pandas, without a column.
    ``first_row``: the table's first row in the file (a row group's), so the message names the file's row."""
    for name, column in zip(table.column_names, table.columns):
        offset = first_row
        for chunk in column.chunks:
            try:
                chunk.validate(full=True)
            except pa.ArrowInvalid as exc:
                found = UTF8_INDEX.search(str(exc))
                row = f" row {offset + int(found.group(1))}" if found else ""
                raise FormatError(f"column {name!r}{row}: {exc}") from None
            offset += len(chunk)


def parquet_names(source) -> list[str]:
    names = pq.read_schema(source).names
    require_unique(names)
    return names


def read_parquet(source) -> pd.DataFrame:
    """Every stored column as a column: pandas' metadata is ignored, so a column saved as the index stays one."""
    parquet = pq.ParquetFile(source)
    require_unique(parquet.schema_arrow.names)
    dictionaries = any(pa.types.is_dictionary(field.type) for field in parquet.schema_arrow)
    if parquet.num_row_groups <= 1 or dictionaries:  # categories could differ by row group: read whole
        table = parquet.read()
        check_utf8(table)
        return table.to_pandas(ignore_metadata=True)
    # a row group at a time, so the file's Arrow copy never sits whole beside the frame made of it; the
    # groups' frames concatenate to the whole table's dtypes (an integer column with a null anywhere: float)
    frames, first_row = [], 0
    for group in range(parquet.num_row_groups):
        table = parquet.read_row_group(group)
        check_utf8(table, first_row)
        first_row += table.num_rows
        frames.append(table.to_pandas(ignore_metadata=True))
        del table
    return pd.concat(frames, ignore_index=True)
