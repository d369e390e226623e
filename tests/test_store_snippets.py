"""README's "Looking at the data between stages": every fenced snippet of that section runs, as written there, on
a store holding soft, semi-hard and contradiction triplets (made by the stages' own code) beside a killed build
and a failed resumable one. The snippets are read from the README itself, so the two cannot drift.

What they show: one triplets schema whatever the strategy (DuckDB, pandas, polars and ``datasets`` read every
artifact together), and globs over ``artifacts/<stage>/*/`` that never see a staging folder."""

from __future__ import annotations

import ast
import json
import re
import shlex
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest

from flows import cli
from tasks.models.resolve import resolve_model
from tasks.negatives.strategies import MiningConfig
from tasks.pairs.sources import DEFAULT_NLI_SAMPLE
from tasks.stages import data as stages
from tasks.store.artifacts import artifacts_root, list_artifacts, materialize, write_parquet
from tasks.store.catalog import TRIPLETS_FILE, VERSIONS
from tasks.store.locks import staging_dir

README = Path(__file__).resolve().parent.parent / "README.md"
SECTION = "## Looking at the data between stages"
COMMAND = ".venv/bin/train-embeddings"
KEYED = re.compile(r"([a-z]+)/<key>")  # a snippet's placeholder: some artifact of that stage
ROWS = ["anchor", "positive", "positive_score", "negative", "negative_score", "negative_rank"]
BOGUS = pd.DataFrame({"anchor": ["half"], "negative": [0]})  # what a staging folder holds: not the schema


def snippets() -> list[tuple[str, str]]:
    """(language, code) of each fenced block of the section, in order."""
    text = README.read_text()
    start = text.index(SECTION)
    end = text.find("\n## ", start + len(SECTION))
    return re.findall(r"^```(\w+)\n(.*?)^```", text[start : end if end > 0 else None], re.S | re.M)


class _Quiet:
    """StageProgress without a Prefect run: no progress artifact to create."""

    def __init__(self, description: str) -> None:
        self.description = description

    def update(self, fraction: float) -> None:
        pass


def _source(frame: pd.DataFrame, path: Path) -> str:
    frame[["premise", "hypothesis", "label"]].to_parquet(path)
    return str(path)


@pytest.fixture(scope="module")
def store(tiny_bert, nli_sample, tmp_path_factory) -> Iterator[Path]:
    """``<tmp>/data``: triplets of every strategy (their raw and pairs, the semi-hard index), tokens and metrics,
    made by the stage functions (the Prefect run's logger and artifacts left out); and in ``.staging/``, a killed
    build's ``.tmp-`` and a failed resumable build's ``.partial-``, both holding a triplets file of another schema."""
    with pytest.MonkeyPatch.context() as monkeypatch:
        _without_a_run(monkeypatch)
        yield _build_store(tmp_path_factory.mktemp("snippets"), tiny_bert, nli_sample)


def _without_a_run(monkeypatch: pytest.MonkeyPatch) -> None:
    """The stages' calls that need a Prefect run (its logger, its artifacts), made to do nothing."""
    monkeypatch.setattr(stages, "logged", lambda ref: ref)
    monkeypatch.setattr(stages, "create_table_artifact", lambda **kwargs: None)
    monkeypatch.setattr(stages, "StageProgress", _Quiet)


def _build_store(root: Path, tiny_bert: Path, nli_sample: pd.DataFrame) -> Path:
    data = str(root / "data")
    full = pd.read_parquet(DEFAULT_NLI_SAMPLE)
    both = full.groupby("premise")["label"].agg(set).map(lambda labels: {0, 2} <= labels)
    sources = {
        "mnli": _source(nli_sample.head(120), root / "nli.parquet"),
        "contradicted": _source(full[full["premise"].isin(both[both].index)].head(90), root / "contradicted.parquet"),
    }
    miner = resolve_model(str(tiny_bert))
    triplets = {}
    for strategy, source in (("soft", "mnli"), ("semi-hard", "mnli"), ("contradiction", "contradicted")):
        raw = stages.load_pairs.fn(sources[source], None, data)
        pairs = stages.map_labels.fn(raw, "mnr", data)
        config = MiningConfig(strategy=strategy, range_max=20)
        triplets[strategy] = stages.mine_negatives.fn(pairs, raw, config, miner if strategy == "semi-hard" else None,
                                                      data)  # fmt: skip
    stages.tokenize.fn(triplets["semi-hard"], miner, "mnr", data)

    def metrics(folder: Path) -> int:
        return write_parquet(
            pd.DataFrame({"metric": ["stsb_test_spearman"], "value": [0.5]}), folder / "metrics.parquet"
        )

    materialize(data, "metrics", VERSIONS["metrics"], {"model": "tiny"}, [], metrics)

    def failing(folder: Path) -> None:
        write_parquet(BOGUS, folder / TRIPLETS_FILE)
        raise RuntimeError("killed")

    with pytest.raises(RuntimeError, match="killed"):  # its .partial- stays, to resume from
        materialize(data, "triplets", VERSIONS["triplets"], {"failed": True}, [], failing, resumable=True)
    killed = staging_dir(artifacts_root(data) / "triplets" / "0123456789abcdef") / ".tmp-0123456789abcdef-0badf00d"
    killed.mkdir()  # a build killed mid-way (SIGKILL: nothing cleaned up)
    write_parquet(BOGUS, killed / TRIPLETS_FILE)
    return Path(data)


def _keys(data: Path, stage: str) -> list[str]:
    return sorted(row["key"] for row in list_artifacts(data) if row["stage"] == stage)


def _manifest(data: Path, stage: str, key: str) -> dict:
    return json.loads((data / "artifacts" / stage / key / "manifest.json").read_text())


def _filled(code: str, data: Path) -> list[str]:
    """``code`` with each ``<stage>/<key>`` naming an artifact of the store: once per artifact of the stage that has
    the most (the other stages' placeholders take their first)."""
    keys = {stage: _keys(data, stage) for stage in sorted(set(KEYED.findall(code)))}
    assert all(keys.values()), f"the test store has no artifact of {[s for s, k in keys.items() if not k]}"
    filled = []
    for i in range(max((len(k) for k in keys.values()), default=1)):
        one = code
        for stage, found in keys.items():
            one = one.replace(f"{stage}/<key>", f"{stage}/{found[min(i, len(found) - 1)]}")
        filled.append(one)
    return filled


def _bash(code: str, data: Path, capsys: pytest.CaptureFixture) -> None:
    """Each command line (comments dropped) through the CLI's entry point: each exits 0, and names no staging."""
    for line in (part.split("#", 1)[0].strip() for part in code.splitlines()):
        if not line:
            continue
        assert line.startswith(f"{COMMAND} "), f"README runs something this test cannot: {line!r}"
        for filled in _filled(line, data):
            assert cli.main(shlex.split(filled.removeprefix(COMMAND))) == 0, filled
            out = capsys.readouterr().out
            assert not [word for word in (".staging", ".tmp-", ".partial-") if word in out], (filled, out)


def _python(code: str, data: Path) -> None:
    """The block as a module; each bare expression is evaluated and must give a non-empty frame (of the one
    schema, when it reads triplets)."""
    scope: dict = {}
    for filled in _filled(code, data):
        _run(filled, scope)


def _run(code: str, scope: dict) -> None:
    for statement in ast.parse(code).body:
        if isinstance(statement, ast.Expr):
            value = eval(compile(ast.Expression(statement.value), "README.md", "eval"), scope)  # noqa: S307
            assert len(value) > 0, ast.unparse(statement)
            if "triplets" in ast.unparse(statement):
                assert list(value.columns) == ROWS, ast.unparse(statement)
        else:
            exec(compile(ast.Module([statement], []), "README.md", "exec"), scope)  # noqa: S102


def _sql(code: str, data: Path) -> None:
    """The query in DuckDB: rows for the unscored strategies' null rank and for semi-hard's ranks."""
    import duckdb

    counts = dict(duckdb.sql(code.strip().rstrip(";")).fetchall())
    ranks = pd.concat(
        [pd.read_parquet(data / "artifacts" / "triplets" / key / TRIPLETS_FILE)["negative_rank"]
         for key in _keys(data, "triplets")]
    )  # fmt: skip
    assert counts.pop(None) == ranks.isna().sum() > 0  # soft and contradiction
    assert counts == ranks.dropna().value_counts().to_dict() != {}  # semi-hard


def test_the_section_has_a_snippet_of_each_kind_and_none_this_test_cannot_run():
    kinds = [kind for kind, _ in snippets()]
    assert {"bash", "python", "sql"} <= set(kinds) and set(kinds) <= {"bash", "python", "sql"}, kinds
    assert any("polars" in code for _, code in snippets())


def test_every_snippet_of_the_section_runs_on_a_store_of_every_strategy(store, monkeypatch, capsys):
    strategies = {_manifest(store, "triplets", key)["params"]["strategy"] for key in _keys(store, "triplets")}
    assert strategies == {"soft", "semi-hard", "contradiction"}
    assert len(list((store / "artifacts" / ".staging" / "triplets").iterdir())) == 2  # the .tmp- and the .partial-
    monkeypatch.chdir(store.parent)  # the snippets name the data folder `data`
    run = {
        "bash": lambda c: _bash(c, store, capsys),
        "python": lambda c: _python(c, store),
        "sql": lambda c: _sql(c, store),
    }
    for kind, code in snippets():
        run[kind](code)


def test_every_triplets_file_has_one_schema_and_globs_see_no_staging(store, tmp_path):
    """The same Arrow schema in every triplets and sample file; polars and ``datasets`` read them all together."""
    import datasets
    import polars as pl
    import pyarrow.parquet as pq

    files = sorted((store / "artifacts" / "triplets").glob("*/*.parquet"))
    assert len(files) == 6  # triplets.parquet and sample.parquet of each strategy; none from .staging/
    mains = [f for f in files if f.name == TRIPLETS_FILE]
    schemas = {pq.read_schema(f).remove_metadata() for f in files}
    assert len(schemas) == 1 and next(iter(schemas)).names == ROWS
    glob = str(store / "artifacts" / "triplets" / "*" / TRIPLETS_FILE)
    frame = pl.read_parquet(glob)
    assert frame.columns == ROWS and frame.height == sum(pq.read_metadata(f).num_rows for f in mains)
    assert dict(zip(frame.columns, map(str, frame.dtypes))) == {
        "anchor": "String", "positive": "String", "positive_score": "Float64", "negative": "String",
        "negative_score": "Float64", "negative_rank": "Int64",
    }  # fmt: skip
    assert frame["positive_score"].null_count() == frame["negative_rank"].null_count() > 0
    assert not frame["positive_score"].is_nan().any()  # null, never NaN
    loaded = datasets.load_dataset("parquet", data_files=glob, split="train", cache_dir=str(tmp_path / "hf"))
    assert loaded.column_names == ROWS and len(loaded) == frame.height


def test_a_columns_layout_holds_n_negatives_and_reads_beside_rows_by_name(tmp_path, nli_sample, monkeypatch):
    """``negatives_layout=columns`` is the one declared setting that shapes the file (negative_1..n, as the trainer
    reads them): DuckDB reads it beside rows-layout artifacts with ``union_by_name``, as the README says."""
    import duckdb
    import pyarrow.parquet as pq

    _without_a_run(monkeypatch)
    data = str(tmp_path / "data")
    raw = stages.load_pairs.fn(_source(nli_sample.head(60), tmp_path / "nli.parquet"), None, data)
    pairs = stages.map_labels.fn(raw, "mnr", data)
    for layout in ("rows", "columns"):
        stages.mine_negatives.fn(pairs, raw, MiningConfig(num_negatives=2, layout=layout), None, data)
    glob = f"{data}/artifacts/triplets/*/{TRIPLETS_FILE}"
    columns = [c for c, *_ in duckdb.sql(f"DESCRIBE SELECT * FROM read_parquet('{glob}', union_by_name = true)")
               .fetchall()]  # fmt: skip
    assert set(columns) == set(ROWS) | {f"negative_{i}{s}" for i in (1, 2) for s in ("", "_score", "_rank")}
    rows = sum(pq.read_metadata(f).num_rows for f in Path(data).glob(f"artifacts/triplets/*/{TRIPLETS_FILE}"))
    assert duckdb.sql(f"SELECT count(*) FROM read_parquet('{glob}', union_by_name = true)").fetchall() == [(rows,)]
