"""Loading and validating training input: every supported format, every bad-input case, growing local
folders, and hub datasets pinned by revision (read offline from a hub cache built here in the real layout)."""

from __future__ import annotations

import ast
import json
import logging
from pathlib import Path
from types import SimpleNamespace

import pandas as pd
import pytest

from tasks.pairs.hub import HubSource, parse_hub_source
from tasks.pairs.labels import CONTRADICTION, ENTAILMENT, NEUTRAL, NLI_LABELS
from tasks.pairs.sources import (
    check_loss_fits,
    describe_nli,
    load_source,
    local_files,
    negative_columns,
    pin_source,
    source_columns,
    source_fingerprint,
    validate_nli,
)
from tasks.pairs.tables import DataError

NLI = ["premise", "hypothesis", "label"]


def glue_tsv(df: pd.DataFrame) -> str:
    """A TSV as GLUE writes its files: each row's values joined by tabs, no quoting."""
    return "".join("\t".join(map(str, row)) + "\n" for row in [list(df.columns), *df.itertuples(index=False)])


def _write(df: pd.DataFrame, path):
    if path.suffix == ".parquet":
        df.to_parquet(path)
    elif path.suffix == ".tsv":
        path.write_text(glue_tsv(df), encoding="utf-8")
    elif path.suffix == ".csv":
        df.to_csv(path, index=False)
    else:
        df.to_json(path, orient="records", lines=True)
    return path


@pytest.mark.parametrize("suffix", [".parquet", ".tsv", ".csv", ".jsonl"])
def test_each_local_format_loads_the_same_pairs(tmp_path, nli_sample, suffix):
    path = _write(nli_sample[["premise", "hypothesis", "label"]], tmp_path / f"nli{suffix}")
    loaded = load_source(str(path), max_pairs=None)
    pairs, origin = loaded.frame, loaded.origin
    assert loaded.kind == "nli" and list(pairs.columns) == ["premise", "hypothesis", "label"]
    assert len(pairs) == len(nli_sample)
    assert pairs["label"].dtype == "int64"
    assert pairs["premise"].tolist() == nli_sample["premise"].tolist()
    assert origin == f"local:{path}"


def test_max_pairs_takes_the_first_rows(nli_file, nli_sample):
    pairs = load_source(str(nli_file), max_pairs=7).frame
    assert pairs["hypothesis"].tolist() == nli_sample["hypothesis"].head(7).tolist()


def test_a_folder_is_one_source_of_all_its_data_files(tmp_path, nli_sample):
    """No train.* rule any more: a folder holding train.parquet and validation.parquet reads both, by name."""
    _write(nli_sample.head(5)[NLI], tmp_path / "train.parquet")
    _write(nli_sample.iloc[5:8][NLI], tmp_path / "validation.parquet")
    (tmp_path / "README.md").write_text("not data")
    assert [p.name for p in local_files(str(tmp_path))] == ["train.parquet", "validation.parquet"]
    assert load_source(str(tmp_path), None).frame["premise"].tolist() == nli_sample["premise"].head(8).tolist()


def test_fingerprint_follows_file_content(nli_file, nli_sample):
    before = source_fingerprint(str(nli_file))
    assert before == source_fingerprint(str(nli_file))
    nli_sample.head(10)[["premise", "hypothesis", "label"]].to_parquet(nli_file)
    assert source_fingerprint(str(nli_file))["sha256"] != before["sha256"]


def test_glue_first_rows_keep_their_labels():
    pairs = load_source("data/samples/mnli/glue_train_first5.parquet", None).frame
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
        load_source(str(path), None)
    message = str(error.value)
    assert str(path) in message
    for fragment in expected:
        assert fragment in message


def test_missing_file_is_named(tmp_path):
    with pytest.raises(DataError, match="nope.parquet: file not found"):
        load_source(str(tmp_path / "nope.parquet"), None)


def test_unreadable_file_is_named(tmp_path):
    path = tmp_path / "broken.parquet"
    path.write_bytes(b"this is not parquet")
    with pytest.raises(DataError, match="broken.parquet: cannot read .parquet file"):
        load_source(str(path), None)


def test_unsupported_type_is_named(tmp_path):
    path = tmp_path / "pairs.xlsx"
    path.write_text("x")
    with pytest.raises(DataError, match="unsupported file type '.xlsx'"):
        load_source(str(path), None)


def test_malformed_jsonl_is_named(tmp_path):
    path = tmp_path / "pairs.jsonl"
    path.write_text(json.dumps({"premise": "a", "hypothesis": "b", "label": 0}) + "\n{not json\n")
    with pytest.raises(DataError, match=r"pairs.jsonl: line 2: not JSON: .* \(column 2\)"):
        load_source(str(path), None)


def test_the_labels_are_named_by_their_one_numbering(nli_file):
    loaded = load_source(str(nli_file), None)
    counts = loaded.frame["label"].value_counts()
    assert NLI_LABELS == {ENTAILMENT: "entailment", NEUTRAL: "neutral", CONTRADICTION: "contradiction"}
    assert json.loads(describe_nli(loaded.frame)) == {NLI_LABELS[k]: int(v) for k, v in sorted(counts.items())}
    assert json.loads(describe_nli(pd.DataFrame({"anchor": ["a"], "positive": ["b"]}))) == {"pairs": 1}


def test_negative_columns_are_found_in_their_order():
    columns = ["anchor", "negative_2", "positive", "negative", "negative_1_score", "negatives", "negative_score"]
    assert negative_columns(columns) == ["negative_2", "negative"]
    assert negative_columns(["anchor", "positive", 3]) == []


def test_the_nli_numbers_and_the_negative_column_pattern_are_defined_once():
    """One numbering of the labels (tasks/pairs/labels.py) and one negative-column pattern (beside the
    source reader): a second copy could drift from the first unnoticed."""
    names = {"ENTAILMENT", "NEUTRAL", "CONTRADICTION", "NLI_LABELS"}
    found = []
    for path in sorted((Path(__file__).resolve().parent.parent / "tasks").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            targets = node.targets if isinstance(node, ast.Assign) else []
            assigned = {n.id for t in targets for n in ast.walk(t) if isinstance(n, ast.Name)}
            found += [(path.name, name) for name in sorted(assigned & names)]
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and "negative(_" in node.value:
                found.append((path.name, "negative pattern"))
    expected = [("labels.py", n) for n in ("CONTRADICTION", "ENTAILMENT", "NEUTRAL", "NLI_LABELS")]
    assert sorted(found) == sorted([*expected, ("sources.py", "negative pattern")])


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
    """A local folder standing in for a hub repo gets the hash of its card and data files as its revision."""
    loaded = load_source("glue/mnli", max_pairs=3)
    pairs, origin = loaded.frame, loaded.origin
    fingerprint = source_fingerprint("glue/mnli")
    revision = fingerprint["revision"]
    assert revision.startswith("sha256:") and len(revision) == len("sha256:") + 64
    assert origin == f"hub:{glue_hub_copy}:mnli@{revision}"
    assert list(pairs.columns) == ["premise", "hypothesis", "label"]
    assert pairs["label"].tolist() == [1, 0, 0]
    assert pairs.loc[2, "hypothesis"].startswith("A member of my team will execute your orders")
    assert fingerprint == {
        "kind": "hub",
        "repo": str(glue_hub_copy),
        "config": "mnli",
        "split": "train",
        "revision": revision,
    }


def test_a_pinned_local_glue_copy_refuses_changed_files(glue_hub_copy):
    pinned = pin_source("glue/mnli")
    assert pinned == f"glue/mnli@{source_fingerprint('glue/mnli')['revision']}"
    assert source_fingerprint(pinned) == source_fingerprint("glue/mnli")
    data = glue_hub_copy / "mnli" / "train-00000-of-00001.parquet"
    pd.read_parquet(data).head(4).to_parquet(data)
    assert source_fingerprint("glue/mnli")["revision"] != pinned.split("@")[1]
    with pytest.raises(DataError, match="its files changed since the run pinned"):
        load_source(pinned, None)


# --- growing local folders: one source of all its data files, in file-name order ---


def test_a_growing_folder_keeps_its_earlier_rows(tmp_path, nli_sample):
    folder = tmp_path / "nli"
    folder.mkdir()
    _write(nli_sample.iloc[:10][NLI], folder / "part-000.parquet")
    _write(nli_sample.iloc[10:20][NLI], folder / "part-001.tsv")
    before, first, capped = source_fingerprint(str(folder)), *(load_source(str(folder), n).frame for n in (None, 15))
    assert first["premise"].tolist() == nli_sample["premise"].head(20).tolist()
    assert source_fingerprint(str(folder)) == before  # nothing new: the same key
    _write(nli_sample.iloc[20:30][NLI], folder / "part-002.jsonl")
    after = source_fingerprint(str(folder))
    assert after != before and after["files"][:2] == before["files"]
    grown = load_source(str(folder), None).frame
    assert len(grown) == 30 and grown.head(20).equals(first)
    assert load_source(str(folder), 15).frame.equals(capped)


def test_a_bad_file_in_a_folder_is_named(tmp_path, nli_sample):
    _write(nli_sample.head(5)[NLI], tmp_path / "a.parquet")
    bad = _write(pd.DataFrame({"premise": ["a", "b"], "hypothesis": ["c", "d"], "label": [0, 7]}), tmp_path / "b.csv")
    with pytest.raises(DataError) as error:
        load_source(str(tmp_path), None)
    assert str(bad) in str(error.value) and "column 'label' row 1" in str(error.value)


def test_an_empty_folder_is_a_clear_error(tmp_path):
    (tmp_path / "notes.txt").write_text("no pairs here")
    for call in (source_fingerprint, lambda s: load_source(s, None), source_columns, pin_source):
        with pytest.raises(DataError, match=r"folder holds no data files .*notes.txt"):
            call(str(tmp_path))


def test_a_folder_mixing_nli_and_pairs_names_the_odd_file(tmp_path, nli_sample):
    _write(nli_sample.head(3)[NLI], tmp_path / "a.parquet")
    odd = _write(pd.DataFrame({"anchor": ["x"], "positive": ["y"]}), tmp_path / "b.jsonl")
    for call in (lambda s: load_source(s, None), source_columns):
        with pytest.raises(DataError, match="all files of a folder must hold the same kind") as error:
            call(str(tmp_path))
        assert str(odd) in str(error.value)


# --- pairs and triplets: columns read before anything loads, losses checked against them ---


@pytest.mark.parametrize("suffix", [".parquet", ".tsv", ".csv", ".jsonl"])
def test_columns_are_read_without_loading_the_rows(tmp_path, nli_sample, suffix):
    path = _write(nli_sample.iloc[5:9][NLI], tmp_path / f"nli{suffix}")
    assert source_columns(str(path)) == tuple(NLI)


def test_local_triplets_load_as_such_and_their_bad_rows_are_named(tmp_path):
    rows = {"anchor": ["a", "b"], "positive": ["c", "d"], "negative": ["e", "f"]}
    path = _write(pd.DataFrame(rows), tmp_path / "triplets.jsonl")
    assert source_columns(str(path)) == ("anchor", "positive", "negative")
    loaded = load_source(str(path), None)
    assert loaded.kind == "triplets" and loaded.frame.to_dict("list") == rows
    check_loss_fits("triplets", "mnr")
    with pytest.raises(ValueError, match="'cosine' needs NLI labels"):
        check_loss_fits("triplets", "cosine")
    _write(pd.DataFrame(rows | {"negative": ["e", " "]}), path)
    with pytest.raises(DataError) as error:
        load_source(str(path), None)
    assert str(path) in str(error.value) and "column 'negative' row 1" in str(error.value)


def test_nli_sources_fit_every_loss(nli_file):
    for loss in ("softmax", "cosine", "mnr", "gist"):
        check_loss_fits(source_columns(str(nli_file)), loss, "contradiction" if loss == "mnr" else "none")


# --- hub datasets pinned by revision, read offline from a hub cache in the real layout ---

REPO = "org/nli-standin"
SHA_OLD, SHA_NEW = "a1" * 20, "b2" * 20
CARD = """---
configs:
- config_name: pair
  data_files:
  - split: train
    path: pair/train-*
- config_name: pair-class
  data_files:
  - split: train
    path: pair-class/train-*
  - split: dev
    path: pair-class/dev-*
---
# A stand-in for a hub NLI dataset
"""


@pytest.fixture()
def hub_cache(tmp_path, monkeypatch):
    """An empty Hugging Face hub cache, offline (the hub itself is unreachable from tests)."""
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    return tmp_path / "hub"


def cache_commit(cache, sha: str, frames: dict[str, pd.DataFrame], ref: str | None = "main") -> None:
    """One commit of REPO as huggingface_hub caches it: refs/<branch> holds the sha, snapshots/<sha>/ the
    card and each config's train file (no blobs/ or trees/: snapshot_download does not need them offline)."""
    storage = cache / f"datasets--{REPO.replace('/', '--')}"
    snapshot = storage / "snapshots" / sha
    for config, frame in frames.items():
        (snapshot / config).mkdir(parents=True)
        frame.to_parquet(snapshot / config / "train-00000-of-00001.parquet")
    (snapshot / "README.md").write_text(CARD)
    if ref is not None:
        (storage / "refs").mkdir(exist_ok=True)
        (storage / "refs" / ref).write_text(sha)


def test_the_same_revision_gives_the_same_fingerprint_and_is_what_is_read(hub_cache, nli_sample, caplog):
    caplog.set_level(logging.INFO, logger="tasks.pairs.hub")
    cache_commit(hub_cache, SHA_OLD, {"pair-class": nli_sample.head(20)[NLI]})
    source = f"{REPO}:pair-class"
    fingerprint = source_fingerprint(source)
    assert fingerprint == {"kind": "hub", "repo": REPO, "config": "pair-class", "split": "train", "revision": SHA_OLD}
    assert source_fingerprint(source) == fingerprint
    assert f"offline: using the cached revision {SHA_OLD} of {REPO}" in caplog.text
    assert pin_source(source) == f"{source}@{SHA_OLD}"
    loaded = load_source(source, max_pairs=5)
    assert loaded.kind == "nli" and loaded.origin == f"hub:{source}@{SHA_OLD}"
    assert loaded.frame["premise"].tolist() == nli_sample["premise"].head(5).tolist()


def test_a_moved_branch_gives_a_new_fingerprint_and_a_sha_pins_the_old_rows(hub_cache, nli_sample):
    source = f"{REPO}:pair-class"
    cache_commit(hub_cache, SHA_OLD, {"pair-class": nli_sample.head(20)[NLI]})
    old = source_fingerprint(source)
    cache_commit(hub_cache, SHA_NEW, {"pair-class": nli_sample.iloc[100:130][NLI]})  # refs/main moves on
    assert source_fingerprint(source)["revision"] == SHA_NEW
    assert load_source(source, None).frame["premise"].tolist() == nli_sample["premise"].iloc[100:130].tolist()
    pinned = f"{source}@{SHA_OLD}"
    assert source_fingerprint(pinned) == old
    assert load_source(pinned, None).frame["premise"].tolist() == nli_sample["premise"].head(20).tolist()


def test_only_the_chosen_configs_train_files_are_asked_for(hub_cache, nli_sample, monkeypatch):
    import huggingface_hub

    asked, real = [], huggingface_hub.snapshot_download
    monkeypatch.setattr(huggingface_hub, "snapshot_download", lambda *a, **k: asked.append(k) or real(*a, **k))
    cache_commit(hub_cache, SHA_OLD, {"pair-class": nli_sample.head(4)[NLI]})
    load_source(f"{REPO}:pair-class", None)
    assert asked[0]["allow_patterns"] == ["README.md", "pair-class/train-*"] and asked[0]["revision"] == SHA_OLD


def test_offline_and_not_cached_fails_before_anything_loads(hub_cache, nli_sample, monkeypatch):
    import datasets
    import huggingface_hub

    def forbidden(*args, **kwargs):
        raise AssertionError("nothing may load")

    monkeypatch.setattr(datasets, "load_dataset", forbidden)
    monkeypatch.setattr(huggingface_hub, "snapshot_download", forbidden)
    cache_commit(hub_cache, SHA_OLD, {"pair-class": nli_sample.head(4)[NLI]}, ref=None)  # no branch points at it
    for call in (pin_source, source_fingerprint, source_columns, lambda s: load_source(s, None)):
        with pytest.raises(DataError) as error:
            call(f"{REPO}:pair-class")
        message = str(error.value)
        assert "not in the local Hugging Face cache" in message and "Run once with network" in message
        assert "pass a local file or folder" in message and f"exact cached revision: {REPO}@{SHA_OLD}" in message
    with pytest.raises(DataError, match="org/never-cached@main: offline and not in the local Hugging Face cache"):
        load_source("org/never-cached", None)


def test_online_a_branch_is_asked_of_the_hub_and_an_unreachable_hub_falls_back_to_the_cache(
    hub_cache, nli_sample, monkeypatch, caplog
):
    """The online path with the hub's answers faked here: no request leaves the machine."""
    import huggingface_hub
    from huggingface_hub.errors import RevisionNotFoundError

    from tasks.pairs import hub

    asked = []

    def dataset_info(self, repo_id, *, revision=None, **kwargs):
        asked.append(revision)
        if revision == "gone":
            raise RevisionNotFoundError("404", response=SimpleNamespace(headers={}, request=None))
        if revision == "down":
            raise ConnectionError("the hub cannot be reached")
        return SimpleNamespace(sha={"main": SHA_NEW, "v1": SHA_OLD}[revision])

    monkeypatch.setattr(hub, "hub_offline", lambda: False)
    monkeypatch.setattr(huggingface_hub.HfApi, "dataset_info", dataset_info)
    assert pin_source(f"{REPO}:pair-class") == f"{REPO}:pair-class@{SHA_NEW}"
    assert source_fingerprint(f"{REPO}@v1")["revision"] == SHA_OLD
    assert source_fingerprint(f"{REPO}@{SHA_OLD}")["revision"] == SHA_OLD and asked == ["main", "v1"]
    with pytest.raises(DataError, match="the hub has no revision 'gone'"):
        source_fingerprint(f"{REPO}@gone")
    caplog.set_level(logging.INFO, logger="tasks.pairs.hub")
    cache_commit(hub_cache, SHA_OLD, {"pair-class": nli_sample.head(4)[NLI]}, ref="down")
    assert source_fingerprint(f"{REPO}@down")["revision"] == SHA_OLD
    assert f"hub unreachable (ConnectionError): using the cached revision {SHA_OLD} of {REPO}" in caplog.text


def test_a_pairs_dataset_trains_mnr_and_is_refused_for_labelled_losses(hub_cache, nli_sample):
    entailed = nli_sample[nli_sample["label"] == 0].head(6)
    pairs = pd.DataFrame({"anchor": entailed["premise"].to_numpy(), "positive": entailed["hypothesis"].to_numpy()})
    cache_commit(hub_cache, SHA_OLD, {"pair": pairs})
    columns = source_columns(f"{REPO}:pair")
    assert columns == ("anchor", "positive")
    for loss in ("mnr", "gist"):
        check_loss_fits(columns, loss)
    for loss in ("softmax", "cosine"):
        with pytest.raises(ValueError) as error:
            check_loss_fits(columns, loss)
        assert f"loss {loss!r} needs NLI labels" in str(error.value) and "['anchor', 'positive']" in str(error.value)
    loaded = load_source(f"{REPO}:pair", None)
    assert loaded.kind == "pairs" and loaded.frame.equals(pairs)


def test_hub_rows_without_a_gold_label_are_left_out_and_bad_rows_named(hub_cache, nli_sample):
    rows = nli_sample.head(6)[NLI].reset_index(drop=True)
    rows.loc[1, "label"] = -1  # SNLI's and MNLI's mark for no annotator agreement
    cache_commit(hub_cache, SHA_OLD, {"pair-class": rows})
    kept = load_source(f"{REPO}:pair-class", 3).frame
    assert kept["premise"].tolist() == rows["premise"].iloc[[0, 2, 3]].tolist()
    rows.loc[3, "hypothesis"] = " "
    cache_commit(hub_cache, SHA_NEW, {"pair-class": rows})
    with pytest.raises(DataError, match=rf"hub {REPO}:pair-class@{SHA_NEW}: column 'hypothesis' row 2"):
        load_source(f"{REPO}:pair-class", None)


def test_a_local_path_wins_over_a_hub_name(tmp_path, nli_sample, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "org" / "name").mkdir(parents=True)
    _write(nli_sample.head(4)[NLI], tmp_path / "org" / "name" / "a.parquet")
    assert source_fingerprint("org/name")["kind"] == "local-folder"
    assert load_source("org/name", None).origin == "local:org/name"


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("sentence-transformers/all-nli:pair-class@main", HubSource("sentence-transformers/all-nli", "pair-class")),
        ("stanfordnlp/snli", HubSource("stanfordnlp/snli", None)),
        (f"org/name@{SHA_OLD}", HubSource("org/name", None, SHA_OLD)),
        (f"glue/mnli@{SHA_OLD}", HubSource("nyu-mll/glue", "mnli", SHA_OLD, alias="glue/mnli")),
        ("data/pairs.parquet", None),
        ("data/pairs.csv.gz", None),  # a missing local file, in any case, is not a hub name
        ("data/B.PARQUET", None),
        ("/abs/org/name", None),
        ("a/b/c", None),
    ],
)
def test_hub_names(source, expected, monkeypatch):
    monkeypatch.delenv("TRAIN_EMBEDDINGS_GLUE_REPO", raising=False)
    assert parse_hub_source(source) == expected


def test_a_card_that_is_not_cached_is_not_taken_for_no_card(monkeypatch):
    """Not cached (or unreachable) must not read as "the dataset has no card", which would fetch every config."""
    import huggingface_hub
    from huggingface_hub.errors import LocalEntryNotFoundError

    from tasks.pairs import hub

    def not_cached(*args, **kwargs):
        raise LocalEntryNotFoundError("not in the cache")

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", not_cached)
    with pytest.raises(LocalEntryNotFoundError):
        hub.fetch_card("org/name", {"revision": "0" * 40})
