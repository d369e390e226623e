"""The whole flow under a real (temporary) Prefect server: real FAISS, training, mteb; a small slice."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import faiss
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from prefect.testing.utilities import prefect_test_harness
from sentence_transformers import SentenceTransformer

from flows import cli
from flows.train_embeddings import train_embeddings
from tasks.pairs.tables import DataError

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def prefect_api():
    with prefect_test_harness(server_startup_timeout=120):
        yield


@pytest.fixture(scope="module")
def run(prefect_api, tiny_bert, nli_sample, tmp_path_factory):
    """Run the flow with small settings; extra keyword arguments override them."""
    root = tmp_path_factory.mktemp("flow")
    source = root / "nli.parquet"
    nli_sample[["premise", "hypothesis", "label"]].to_parquet(source)
    defaults = dict(
        loss="mnr",
        negatives="semi-hard",
        nli_source=str(source),
        max_pairs=240,
        base_model=str(tiny_bert),
        epochs=1,
        batch_size=16,
        warmup_steps=1,
        eval_steps=2,
        max_steps=3,
        eval_limit=100,
        data_dir=str(root / "data"),
    )

    def _run(**overrides):
        return train_embeddings(**(defaults | overrides))

    _run.data_dir = root / "data"
    _run.base_model = tiny_bert
    _run.source = source
    return _run


def _manifest(ref: dict) -> dict:
    return json.loads(open(f"{ref['path']}/manifest.json").read())


def _cached(summary: dict) -> dict[str, bool]:
    return {step: ref["cached"] for step, ref in summary["artifacts"].items()}


def test_cold_run_writes_every_artifact(run):
    summary = run()
    assert not any(_cached(summary).values())
    arts = summary["artifacts"]

    raw = pd.read_parquet(f"{arts['raw']['path']}/raw.parquet")
    assert list(raw.columns) == ["premise", "hypothesis", "label"] and len(raw) == 240
    pairs = pd.read_parquet(f"{arts['pairs']['path']}/pairs.parquet")
    assert list(pairs.columns) == ["anchor", "positive"] and len(pairs) == int((raw["label"] == 0).sum())
    triplets = pd.read_parquet(f"{arts['triplets']['path']}/triplets.parquet")
    sample = pd.read_parquet(f"{arts['triplets']['path']}/sample.parquet")
    assert list(sample.columns) == list(triplets.columns) and 0 < len(sample) <= 200
    assert list(triplets.columns) == [
        *["anchor", "positive", "positive_score"],
        *["negative", "negative_score", "negative_rank"],
    ]
    assert 0 < len(triplets) <= len(pairs)
    positives = set(zip(pairs["anchor"], pairs["positive"]))
    assert not any((a, n) in positives for a, n in zip(triplets["anchor"], triplets["negative"]))
    assert (triplets["negative_score"] < triplets["positive_score"]).all()

    diagnostics = _manifest(arts["triplets"])["diagnostics"]
    assert diagnostics["strategy"] == "semi-hard" and diagnostics["index"] == "flat"
    assert diagnostics["pairs_with_negatives"] == len(triplets)
    assert (Path(arts["triplets"]["path"]) / "similarities.png").stat().st_size > 0

    # token ids: integer lists per text column, one row per triplet, made by the base model's tokenizer
    ids = pq.read_table(f"{arts['tokens']['path']}/tokens.parquet")
    assert ids.column_names == ["anchor_input_ids", "positive_input_ids", "negative_input_ids"]
    assert all(pa.types.is_list(f.type) and f.type.value_type == pa.int32() for f in ids.schema)
    assert ids.num_rows == len(triplets)
    base = SentenceTransformer(str(run.base_model))
    expected = base.preprocess(triplets["negative"].head(5).tolist())
    for row, (ids_row, mask) in enumerate(zip(expected["input_ids"], expected["attention_mask"])):
        assert ids.column("negative_input_ids")[row].as_py() == ids_row[mask.bool()].tolist()
    tokens_manifest = _manifest(arts["tokens"])
    assert tokens_manifest["tokenizer"]["max_seq_length"] == base.max_seq_length == 64
    assert tokens_manifest["parents"][0]["key"] == arts["triplets"]["key"]
    assert (Path(arts["tokens"]["path"]) / "lengths.png").stat().st_size > 0
    manifest = json.loads(open(f"{arts['raw']['path']}/manifest.json").read())
    assert manifest["origin"] == f"local:{run.source}"
    model_manifest = json.loads(open(f"{arts['model']['path']}/manifest.json").read())
    assert model_manifest["base_model"]["source"] == "local"
    assert model_manifest["training"]["steps"] == 3 and model_manifest["training"]["device"] == "cpu"
    assert model_manifest["parents"] == [
        {"stage": "tokens", "key": arts["tokens"]["key"], "path": arts["tokens"]["path"]}
    ]
    assert model_manifest["training"]["batches"] == "grouped"  # length-grouped chunks, no flash attention here
    assert model_manifest["training"]["padded_tokens_per_real"] >= 1.0
    assert summary["miner_model"]["name"] == "sentence-transformers/all-MiniLM-L6-v2"
    assert summary["miner_model"]["source"] == "bundled"

    assert set(summary["metrics"]) == {"stsb_validation_spearman", "stsb_test_spearman", "banking77_accuracy"}
    for pair in summary["metrics"].values():
        assert -1 <= pair["base"] <= 1 and -1 <= pair["trained"] <= 1
    assert 0 <= summary["metrics"]["banking77_accuracy"]["trained"] <= 1
    report = pd.read_parquet(f"{arts['report']['path']}/comparison.parquet")
    assert list(report.columns) == ["metric", "base", "trained", "delta"] and len(report) == 3
    assert (run.data_dir / "artifacts" / "reports" / arts["report"]["key"] / "comparison.png").stat().st_size > 0
    assert json.loads(open(summary["run_record"]).read())["metrics"] == summary["metrics"]
    assert summary["champion"]["promoted"] is True
    assert summary["champion"]["champion_after"]["model_key"] == arts["model"]["key"]


def test_prefect_artifacts_are_published(run):
    from prefect.client.orchestration import get_client

    async def keys():
        async with get_client() as client:
            return {a.key for a in await client.read_artifacts() if a.key}

    assert {"train-embeddings-metrics", "train-embeddings-lineage", "mining-diagnostics"} <= asyncio.run(keys())


def test_second_run_is_served_from_cache(run):
    first = run()
    created = {s: _manifest(r)["created"] for s, r in first["artifacts"].items()}
    again = run()
    assert all(_cached(again).values())
    assert again["metrics"] == first["metrics"]
    assert again["champion"]["promoted"] is False
    for step, ref in again["artifacts"].items():
        assert _manifest(ref)["created"] == created[step]


def test_changed_learning_rate_recomputes_only_downstream(run):
    before = run()
    after = run(learning_rate=1e-4)
    cached = _cached(after)
    assert cached == {
        "raw": True,
        "pairs": True,
        "triplets": True,
        "tokens": True,  # another learning rate tokenises nothing
        "model": False,
        "base-metrics": True,
        "trained-metrics": False,
        "report": False,
        "release": False,  # a new model, a new release
    }
    assert after["artifacts"]["model"]["key"] != before["artifacts"]["model"]["key"]
    assert after["artifacts"]["triplets"]["key"] == before["artifacts"]["triplets"]["key"]


def test_a_runtime_change_alone_is_served_from_the_store(run):
    """Checkpoint cadence, evaluation cadence, processes, unpadding and the attention kernel decide how the
    model is trained, not which model: the store serves it; a recipe setting (the seed) retrains."""
    before = run()
    runtime_only = run(checkpoint_steps=1, eval_steps=0, processes=1, unpad=False, attention="eager")
    assert all(_cached(runtime_only).values())
    assert runtime_only["artifacts"]["model"]["key"] == before["artifacts"]["model"]["key"]
    assert runtime_only["metrics"] == before["metrics"]
    reseeded = run(seed=7, negatives="none")  # the seed alone, without re-mining
    assert _cached(reseeded)["model"] is False


def test_a_run_on_a_local_cluster_mines_trains_and_scores_as_one_process(run, tmp_path):
    """encode_cluster is a runtime setting: a cold run on two local workers makes the artifacts one process
    makes, under the same keys: the same triplets (exact search on the workers), model and metrics."""
    alone = run()
    spread = run(encode_cluster="local:2", data_dir=str(tmp_path / "data"))
    assert not any(_cached(spread).values())
    for stage in ("raw", "pairs", "triplets", "tokens", "model", "base-metrics", "trained-metrics"):
        assert spread["artifacts"][stage]["key"] == alone["artifacts"][stage]["key"], (
            stage
        )  # (the release: each store its own champion history)
    triplets = [pd.read_parquet(Path(r["artifacts"]["triplets"]["path"]) / "triplets.parquet") for r in (alone, spread)]
    pd.testing.assert_frame_equal(triplets[1], triplets[0], check_exact=False, atol=1e-5)
    for metric, pair in alone["metrics"].items():
        assert spread["metrics"][metric] == pytest.approx(pair, abs=1e-6), metric


def test_the_champion_mines_the_next_runs_negatives(run, tmp_path):
    """miner_model=champion: the base model while there is no champion, then the champion, whose new
    fingerprint gives new triplets; evaluation data fingerprints are part of the metrics key."""
    data_dir = str(tmp_path / "data")
    first = run(miner_model="champion", data_dir=data_dir)
    assert first["miner_model"]["name"] == str(run.base_model) and first["champion"]["promoted"]
    second = run(miner_model="champion", data_dir=data_dir, learning_rate=1e-4)
    assert second["miner_model"]["name"] == first["model_path"]  # the champion's folder
    assert second["artifacts"]["triplets"]["key"] != first["artifacts"]["triplets"]["key"]
    assert second["artifacts"]["raw"]["key"] == first["artifacts"]["raw"]["key"]
    metrics = _manifest(first["artifacts"]["base-metrics"])
    assert metrics["params"]["data"] == first["evaluation"]["data"]


def test_deleted_artifact_is_recomputed_not_a_crash(run):
    before = run()
    triplets = before["artifacts"]["triplets"]["path"]
    (run.data_dir / "artifacts" / "triplets" / before["artifacts"]["triplets"]["key"] / "triplets.parquet").unlink()
    after = run()
    assert after["artifacts"]["triplets"]["cached"] is False
    assert after["artifacts"]["triplets"]["path"] == triplets
    assert after["artifacts"]["tokens"]["cached"] is True  # same triplets, same key: ids and model are reused
    assert after["artifacts"]["model"]["cached"] is True


@pytest.mark.parametrize(
    "content, message",
    [
        (pd.DataFrame({"premise": ["a"], "hypothesis": ["b"], "label": [7]}), "column 'label' row 0"),
        (pd.DataFrame({"premise": ["a"], "label": [0]}), "missing column"),
    ],
)
def test_bad_input_fails_before_any_model_and_harms_nothing(run, tmp_path, content, message):
    run()
    before = sorted(p.relative_to(run.data_dir) for p in run.data_dir.rglob("*") if "runs" not in p.parts)
    bad = tmp_path / "bad.parquet"
    content.to_parquet(bad)
    with pytest.raises(DataError, match=message) as error:
        run(nli_source=str(bad))
    assert str(bad) in str(error.value)
    after = sorted(p.relative_to(run.data_dir) for p in run.data_dir.rglob("*") if "runs" not in p.parts)
    assert after == before


def test_bad_parameters_are_refused(run):
    with pytest.raises(ValueError, match="parameter loss"):
        run(loss="triplet")
    with pytest.raises(ValueError, match="applies to losses"):
        run(loss="cosine", negatives="semi-hard")


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"matryoshka_dims": [64, 32]}, "parameter matryoshka_dims: 64 is above the model's embedding dimension 32"),
        ({"loss": "softmax", "negatives": None, "matryoshka_dims": [16]}, "parameter matryoshka_dims: SoftmaxLoss"),
        ({"eval_tasks": ["Banking77Clasification"]}, "parameter eval_tasks: 'Banking77Clasification' is not an MTEB"),
        ({"eval_tasks": ["SciFact"]}, r"parameter eval_tasks: \['SciFact'\] load their data from the Hugging Face Hub"),
        ({"relative_margin": 1.0}, "parameter relative_margin"),
        ({"relative_margin": -0.1}, "parameter relative_margin"),
        ({"promote_metric": "stsb_test_spearman_dim16"}, "parameter promote_metric"),
        ({"eval_holdout": 0.7}, r"parameter eval_holdout: must be a fraction in \[0, 0.5\], got 0.7"),
        ({"promote_metric": "holdout_ndcg@10"}, "parameter promote_metric: 'holdout_ndcg@10' is scored on a held-out"),
        ({"eval_holdout": 0.1, "eval_source": "x.csv"}, "parameter eval_holdout: 0.1 with an eval_source"),
    ],
)
def test_bad_new_options_fail_before_anything_is_read(run, tmp_path, overrides, message):
    data_dir = tmp_path / "untouched"
    with pytest.raises(ValueError, match=message):
        run(data_dir=str(data_dir), **overrides)
    assert not data_dir.exists()  # nothing read, no model loaded, nothing written


def test_gist_matryoshka_positive_aware_mining_and_any_mteb_task_end_to_end(run, tmp_path):
    """Every new option at once, on MNLI rows no other test reads."""
    from tasks.pairs.sources import DEFAULT_NLI_SAMPLE

    unseen = tmp_path / "unseen.parquet"
    pd.read_parquet(DEFAULT_NLI_SAMPLE).iloc[6000:6300][["premise", "hypothesis", "label"]].to_parquet(unseen)
    summary = run(
        nli_source=str(unseen),
        loss="gist",
        negatives="semi-hard",
        relative_margin=0.05,
        matryoshka_dims=[32, 16],
        eval_tasks=["Banking77Classification", "STSBenchmark"],
        promote_metric="stsb_test_spearman_dim16",
    )
    arts = summary["artifacts"]
    triplets = pd.read_parquet(f"{arts['triplets']['path']}/triplets.parquet")
    assert len(triplets) > 0 and (triplets["negative_score"] <= 0.95 * triplets["positive_score"]).all()
    assert _manifest(arts["triplets"])["diagnostics"]["removed_relative_margin"] >= 0
    training = _manifest(arts["model"])["training"]
    assert training["loss_class"] == "GISTEmbedLoss in MatryoshkaLoss" and training["batches"] == "columns"
    assert _manifest(arts["model"])["guide_model"]["source"] == "bundled"

    metrics = pd.read_parquet(f"{arts['trained-metrics']['path']}/metrics.parquet")
    assert list(metrics.columns) == ["metric", "value", "dim_32", "dim_16"]
    assert metrics["metric"].tolist() == [
        "stsb_validation_spearman",
        "stsb_test_spearman",
        "banking77_accuracy",
        "stsbenchmark_cosine_spearman",
    ]
    stsb = metrics.set_index("metric")
    assert stsb.loc["stsb_test_spearman", "dim_32"] == pytest.approx(stsb.loc["stsb_test_spearman", "value"])  # full
    assert stsb[["dim_16"]].iloc[:2].notna().all().all() and stsb[["dim_16"]].iloc[2:].isna().all().all()
    # the bundled STS-B test split is the pairs MTEB's STSBenchmark scores: the same number both ways
    assert stsb.loc["stsbenchmark_cosine_spearman", "value"] == pytest.approx(
        stsb.loc["stsb_test_spearman", "value"], abs=1e-6
    )
    assert (Path(arts["report"]["path"]) / "dimensions.png").stat().st_size > 0
    assert pd.read_parquet(f"{arts['report']['path']}/dimensions.parquet")["dimension"].tolist() == [16, 32]
    assert summary["champion"]["metric"] == "stsb_test_spearman_dim16"
    assert summary["evaluation"]["tasks"] == ["Banking77Classification", "STSBenchmark"]
    assert summary["evaluation"]["data"]["STSBenchmark"].startswith("bundled:")


@pytest.mark.parametrize("loss", ["softmax", "cosine"])
def test_other_losses_run_end_to_end(run, loss):
    summary = run(loss=loss, negatives=None)
    assert "triplets" not in summary["artifacts"]  # no negatives: the tokens come from the pairs
    assert summary["artifacts"]["raw"]["cached"] is True
    columns = list(pd.read_parquet(f"{summary['artifacts']['pairs']['path']}/pairs.parquet").columns)
    assert columns == (["premise", "hypothesis", "label"] if loss == "softmax" else ["sentence1", "sentence2", "score"])


def test_inspect_lists_and_shows_artifacts(run, capsys):
    summary = run()
    cli.main(["inspect", "--data-dir", str(run.data_dir)])
    listing = capsys.readouterr().out
    for stage in ("raw", "pairs", "triplets", "tokens", "models", "metrics", "reports"):
        assert f"\n{stage} " in listing or listing.startswith(f"{stage} ") or f" {stage} " in listing
    key = summary["artifacts"]["triplets"]["key"]
    cli.main(["inspect", f"triplets/{key}", "--data-dir", str(run.data_dir)])
    shown = capsys.readouterr().out
    assert "triplets.parquet" in shown and "negative_score" in shown and key in shown
    cli.main(["inspect", f"tokens/{summary['artifacts']['tokens']['key']}", "--data-dir", str(run.data_dir)])
    shown = capsys.readouterr().out
    assert "truncated" in shown and "max_seq_length" in shown
    assert "anchor_input_ids" in shown and "[CLS]" in shown and "[SEP]" in shown  # ids read back as text


def test_a_token_in_the_environment_is_never_written(run, monkeypatch):
    from prefect.client.orchestration import get_client

    marker = "hf_TESTSECRETdoNotLeak0123456789"
    monkeypatch.setenv("HF_TOKEN", marker)
    summary = run(seed=7, export_formats=["onnx"], compare_exports=False)  # the shipping path too
    assert (Path(summary["release_path"]) / "onnx" / "model.onnx").is_file()
    for path in run.data_dir.rglob("*"):
        if path.is_file():
            assert marker.encode() not in path.read_bytes(), path

    async def logs():
        async with get_client() as client:
            return [entry.message for entry in await client.read_logs()]

    assert all(marker not in message for message in asyncio.run(logs()))


def test_gc_removes_only_what_recent_runs_and_the_champion_do_not_use(run):
    from tasks.store import cleanup
    from tasks.store.champion import read_champion

    last = run()
    stale = cleanup.unreferenced(run.data_dir, keep_runs=1, min_age_hours=0)
    in_use = {Path(ref["path"]).resolve() for ref in last["artifacts"].values()}
    champion = Path(read_champion(run.data_dir)["model_path"]).parent.resolve()
    assert stale, "other losses' artifacts are not referenced by the last run"
    assert not {p.resolve() for p in stale} & (in_use | {champion})
    assert cleanup.unreferenced(run.data_dir, keep_runs=1, min_age_hours=1000) == []
    assert Path(_index_parent(last["artifacts"]["triplets"])["path"]).resolve() not in {p.resolve() for p in stale}
    cleanup.remove(stale)
    again = run()
    assert all(ref["cached"] for ref in again["artifacts"].values())
    assert (Path(_index_parent(again["artifacts"]["triplets"])["path"]) / "index.faiss").exists()  # kept by its child


def test_re_mining_with_another_window_encodes_nothing(run):
    first = run()
    again = run(range_min=3, range_max=30)
    assert again["artifacts"]["triplets"]["cached"] is False
    assert again["artifacts"]["triplets"]["key"] != first["artifacts"]["triplets"]["key"]
    assert _manifest(again["artifacts"]["triplets"])["encoded_texts"] == 0
    triplets = pd.read_parquet(f"{again['artifacts']['triplets']['path']}/triplets.parquet")
    assert triplets["negative_rank"].between(3, 29).all()
    # one candidate index, built once, a parent of both: searched again, not rebuilt
    indexes = [_index_parent(run_["artifacts"]["triplets"]) for run_ in (first, again)]
    assert indexes[0] == indexes[1]
    index = Path(indexes[0]["path"])
    assert {p.name for p in (run.data_dir / "artifacts" / "indexes").iterdir()} >= {index.name}
    raw = pd.read_parquet(f"{first['artifacts']['raw']['path']}/raw.parquet")
    assert faiss.read_index(str(index / "index.faiss")).ntotal == raw["hypothesis"].nunique()
    made = json.loads((index / "manifest.json").read_text())
    assert made["index"] == "flat" and made["params"]["miner"] and made["parents"][0]["stage"] == "raw"


def _index_parent(triplets: dict) -> dict:
    (index,) = [p for p in _manifest(triplets)["parents"] if p["stage"] == "indexes"]
    return index


def test_a_miner_that_cannot_be_loaded_fails_before_encoding(run, tmp_path):
    from tasks.models.resolve import ModelError

    not_a_model = tmp_path / "empty-model"
    not_a_model.mkdir()
    with pytest.raises(ModelError, match="not a local folder and the Hugging Face Hub cannot be reached"):
        run(miner_model="someone/missing-model", range_max=40)
    with pytest.raises(ModelError, match="cannot be loaded"):
        run(miner_model=str(not_a_model), range_max=41)
    assert not list((run.data_dir / "artifacts" / "embeddings").glob(f"*{not_a_model.name}*"))


def test_artifacts_open_with_duckdb(run):
    import duckdb

    summary = run()
    path = Path(summary["artifacts"]["triplets"]["path"]) / "triplets.parquet"
    count = duckdb.sql(f"SELECT count(*) FROM '{path}'").fetchall()[0][0]
    assert count == summary["artifacts"]["triplets"]["rows"]


def test_compare_losses_grid_writes_one_complete_table(prefect_api, tiny_bert, tmp_path):
    from flows.compare_losses import GRID, compare_losses
    from tasks.pairs.sources import DEFAULT_NLI_SAMPLE

    full = pd.read_parquet(DEFAULT_NLI_SAMPLE)[["premise", "hypothesis", "label"]]
    labels = full.groupby("premise")["label"].agg(set)
    with_contradictions = full[full["premise"].isin(labels[labels.map(lambda s: {0, 2} <= s)].index)]
    source = tmp_path / "nli.parquet"
    pd.concat([with_contradictions, full.head(100)]).to_parquet(source)
    result = compare_losses(
        nli_source=str(source),
        base_model=str(tiny_bert),
        max_steps=2,
        eval_limit=100,
        batch_size=16,
        matryoshka_dims=[32, 16],
        data_dir=str(tmp_path / "data"),
    )
    table = pd.read_parquet(Path(result["path"]) / "comparison.parquet")
    assert table["model"].tolist() == ["base", *GRID]
    assert {"mnr+soft+matryoshka", "gist", "mnr+semi-hard+relative"} <= set(GRID)
    assert list(table.columns) == [
        "model",
        "train_rows",
        "stsb_validation_spearman",
        "stsb_validation_spearman_dim32",
        "stsb_validation_spearman_dim16",
        "stsb_test_spearman",
        "stsb_test_spearman_dim32",
        "stsb_test_spearman_dim16",
        "banking77_accuracy",
    ]  # every model evaluated alike: STS-B at each dimension for all of them
    assert table.drop(columns="model").notna().all().all()
    assert (table["train_rows"][1:] > 0).all()
    for picture in ("comparison.png", "dimensions.png"):
        assert (Path(result["path"]) / picture).stat().st_size > 0
    with pytest.raises(ValueError, match="parameter grid"):
        compare_losses(grid=("mnr+soft+wobbly",), data_dir=str(tmp_path / "data"))


def test_a_run_ships_its_model_with_card_exports_and_their_comparison(run, capsys):
    from tasks.shipping import card
    from tasks.shipping.backends import load_export

    summary = run(export_formats=["onnx", "onnx-int8", "openvino", "openvino-int8", "static"])
    release = Path(summary["release_path"])
    assert card.missing_fields(release) == []
    text = (release / "README.md").read_text()
    assert card.SECTION in text and summary["artifacts"]["model"]["key"] in (release / "lineage.json").read_text()
    model = Path(summary["model_path"])
    assert card.SECTION not in (model / "README.md").read_text()  # the model artifact itself is never touched
    for fmt in ("onnx", "openvino", "static"):
        exported = Path(summary["artifacts"][f"export-{fmt}"]["path"]) / "model"
        assert load_export(exported).encode(["a sentence"]).shape[0] == 1
    table = pd.read_parquet(Path(summary["artifacts"]["comparison"]["path"]) / "comparison.parquet")
    assert list(table["format"]) == ["pytorch", "onnx", "onnx-int8", "openvino", "openvino-int8", "static"]
    fp32 = table[table["format"].isin(["onnx", "openvino"])]
    assert (fp32["stsb_test_spearman_delta"].abs() <= 0.001).all() and fp32["within_tolerance"].all()
    assert (Path(summary["artifacts"]["comparison"]["path"]) / "comparison.png").is_file()
    files = {"onnx": "onnx/model.onnx", "onnx-int8": "onnx/model_qint8.onnx", "openvino": "openvino/openvino_model.xml",
             "openvino-int8": "openvino/openvino_model_qint8.xml", "static": "static/modules.json"}  # fmt: skip
    assert (release / "model.safetensors").is_file()
    for _, row in table[table["format"] != "pytorch"].iterrows():  # what left its tolerance is not released
        assert (release / files[row["format"]]).is_file() == bool(row["within_tolerance"]), row["format"]

    again = run(export_formats=["onnx", "onnx-int8", "openvino", "openvino-int8", "static"])
    assert all(ref["cached"] for ref in again["artifacts"].values())  # the release too: same lineage
    cli.main(["inspect", f"releases/{again['artifacts']['release']['key']}", "--data-dir", str(run.data_dir)])
    shown = capsys.readouterr().out
    assert "model card" in shown and card.SECTION in shown and "onnx/model.onnx" in shown
    cli.main(["inspect", f"models/{again['artifacts']['model']['key']}", "--data-dir", str(run.data_dir)])
    assert card.SECTION in capsys.readouterr().out  # the model's own view shows its newest card


def test_push_to_hub_offline_fails_before_any_stage(run, monkeypatch):
    monkeypatch.setenv("HF_TOKEN", "hf_TESTSECRETdoNotLeak0123456789")
    before = set((run.data_dir / "artifacts").rglob("*")) if (run.data_dir / "artifacts").exists() else set()
    with pytest.raises(ValueError, match="parameter push_to_hub: the Hugging Face Hub cannot be reached"):
        run(push_to_hub="org/name", seed=11)
    after = set((run.data_dir / "artifacts").rglob("*")) if (run.data_dir / "artifacts").exists() else set()
    assert after == before
    with pytest.raises(ValueError, match="export_formats"):
        run(export_formats=["tflite"], seed=11)


def test_the_flow_pushes_each_new_champion_once(run, tmp_path, monkeypatch, caplog):
    from tasks.shipping.publish import pushed_file
    from tests.test_shipping import assert_token_nowhere, stand_in_hub

    data = tmp_path / "data"
    settings = dict(data_dir=str(data), miner_model=str(run.base_model), push_to_hub="org/tiny")
    with stand_in_hub(monkeypatch, tmp_path / "hf-home") as hub:
        first = run(**settings)
        assert first["champion"]["promoted"] and first["pushed"].startswith(hub.base)
        assert "README.md" in hub.files["org/tiny"] and hub.repos["org/tiny"]["visibility"] == "private"
        again = run(**settings)  # the same model: the champion, published already
        assert not again["champion"]["promoted"] and again["pushed"] is None
        assert len(hub.commits) == 1
        pushed_file(data, "org/tiny").unlink()  # as if that push had failed: the next run publishes it
        retried = run(**settings)
        assert retried["pushed"] and len(hub.commits) == 2
    assert_token_nowhere(tmp_path, caplog.text)
    from tests.test_publish import TOKEN

    async def logs():
        from prefect.client.orchestration import get_client

        async with get_client() as client:
            return [entry.message for entry in await client.read_logs()]

    assert all(TOKEN not in message for message in asyncio.run(logs()))


def test_a_push_by_the_command_and_then_by_the_flow_publishes_the_champion_once(run, tmp_path, monkeypatch, caplog):
    """One release path: the ``push`` command records its push like the flow, so the next scheduled run of
    the same champion publishes nothing."""
    from tests.test_shipping import assert_token_nowhere, stand_in_hub

    data = tmp_path / "data"
    settings = dict(data_dir=str(data), miner_model=str(run.base_model), seed=5)
    first = run(**settings)
    assert first["champion"]["promoted"]
    with stand_in_hub(monkeypatch, tmp_path / "hf-home") as hub:
        assert cli.main(["push", "champion", "--repo", "org/once", "--data-dir", str(data)]) == 0
        assert len(hub.commits) == 1 and "README.md" in hub.files["org/once"]
        again = run(**settings, push_to_hub="org/once")
        assert again["artifacts"]["model"]["key"] == first["artifacts"]["model"]["key"]
        assert again["pushed"] is None and len(hub.commits) == 1
    assert_token_nowhere(tmp_path, caplog.text)


def test_an_edit_to_a_release_never_touches_the_model(run):
    """The release copies the model's files: editing its config leaves the model's own bytes (and so its
    manifest's checksums) as they were, and the next run is served from the store."""
    summary = run()
    release, model = Path(summary["release_path"]), Path(summary["model_path"])
    before = (model / "config.json").read_bytes()
    assert (release / "config.json").stat().st_ino != (model / "config.json").stat().st_ino
    (release / "config.json").write_text("{}")
    assert (model / "config.json").read_bytes() == before
    assert run()["artifacts"]["model"]["cached"] is True


def test_the_run_record_is_typed_and_names_artifacts_by_stage(run):
    from tasks.store.runs import RunRecord, read_run_record

    summary = run()
    record = read_run_record(Path(summary["run_record"]))
    as_json = json.loads(json.dumps(summary, default=str))  # tuples come back as lists from the file
    assert json.loads(json.dumps(record.as_dict(), default=str)) == as_json
    assert RunRecord.from_dict(summary).artifacts == record.artifacts
    for name, entry in summary["artifacts"].items():  # each entry's stage is its folder
        assert Path(entry["path"]).parent.name == entry["stage"]
        assert name in (entry["stage"], "model", "base-metrics", "trained-metrics", "report", "release")
    assert record.artifacts.training_data == record.artifacts.triplets
    assert (Path(summary["artifacts"]["raw"]["path"]) / "raw.parquet").is_file()
    assert record.environment and record.source_identity["sha256"]


def test_min_gain_nan_is_refused_before_any_stage(run, tmp_path):
    """NaN passed the flow's old check (NaN < 0 is false) and failed only at promotion, after training."""
    for bad in (float("nan"), -0.1):
        with pytest.raises(ValueError, match="parameter min_gain"):
            run(min_gain=bad, data_dir=str(tmp_path / "data"))
    assert not (tmp_path / "data").exists()  # no stage ran


def _texts(frame: pd.DataFrame) -> set[str]:
    from tasks.pairs.labels import normalise

    return {normalise(t) for column in ("premise", "hypothesis") for t in frame[column]}


def test_a_held_out_split_judges_and_promotes_on_the_users_data_as_its_source_grows(run, tmp_path):
    """eval_holdout: a tenth of the anchors kept out of training and mining, scored as retrieval for base and
    trained model, promoting on holdout_ndcg@10; when the folder grows, old rows keep their side, the split's
    key moves, and the champion is scored on the new split before the next challenger is compared with it."""
    from tasks.evaluation.retrieval import metric_names
    from tasks.pairs.labels import normalise
    from tasks.pairs.tables import SAMPLES

    rows = pd.read_parquet(SAMPLES / "mnli" / "train.parquet")[["premise", "hypothesis", "label"]]
    folder, data_dir = tmp_path / "source", str(tmp_path / "data")
    folder.mkdir()
    rows.iloc[:1600].to_parquet(folder / "a.parquet")
    held_out = dict(nli_source=str(folder), max_pairs=None, eval_holdout=0.1, eval_distractors=300, data_dir=data_dir)
    first = run(promote_metric="holdout_ndcg@10", **held_out)

    split = Path(first["artifacts"]["holdout"]["path"])
    held, trained_on = pd.read_parquet(split / "holdout.parquet"), pd.read_parquet(split / "raw.parquet")
    assert 0.05 < held["premise"].nunique() / rows.iloc[:1600]["premise"].nunique() < 0.15
    assert not _texts(held) & _texts(trained_on)  # no anchor, and none of its hypotheses, on both sides
    triplets = pd.read_parquet(Path(first["artifacts"]["triplets"]["path"]) / "triplets.parquet")
    assert not _texts(held) & {normalise(t) for t in triplets["negative"]}  # never mined as a negative
    for metric in metric_names():
        assert 0 <= first["metrics"][metric]["base"] <= 1 and 0 <= first["metrics"][metric]["trained"] <= 1, metric
    metrics = Path(first["artifacts"]["trained-metrics"]["path"])
    assert set(metric_names()) <= set(pd.read_parquet(metrics / "metrics.parquet")["metric"])
    queries = pd.read_parquet(metrics / "holdout_queries.parquet")
    assert len(queries) == first["evaluation"]["holdout_set"]["queries"] >= 50
    champion = json.loads((Path(data_dir) / "artifacts" / "champion" / "champion.json").read_text())
    assert first["champion"]["promoted"] and champion["evaluation"]["holdout"] == split.name
    assert champion["queries"] and Path(champion["queries"]).is_file()
    card = (Path(first["artifacts"]["release"]["path"]) / "model" / "README.md").read_text()
    assert f"split `holdout/{split.name}`" in card and "queries against a corpus of" in card

    rows.iloc[1600:2000].to_parquet(folder / "b.parquet")  # the source grows
    second = run(promote_metric="holdout_ndcg@10", learning_rate=1e-4, **held_out)
    grown = Path(second["artifacts"]["holdout"]["path"])
    assert grown.name != split.name
    still = set(pd.read_parquet(grown / "holdout.parquet")["premise"])
    assert set(held["premise"]) <= still  # every old held-out anchor is still held out
    assert not still & set(rows.iloc[:1600]["premise"]) - set(held["premise"])  # and no old training one is
    decision = second["champion"]
    assert f"the champion re-evaluated on the held-out split holdout/{grown.name}" in decision["reason"]
    assert f"(it had been scored on holdout/{split.name})" in decision["reason"]
    assert decision["champion_rescored"] is not None and decision["rule"] in ("min_gain", "bootstrap")


def test_a_split_with_too_few_queries_fails_before_training(run, tmp_path):
    data_dir = tmp_path / "data"
    with pytest.raises(DataError, match=r"parameter eval_holdout: 0.01 of .* holds out \d+ queries .* fewer than 50"):
        run(eval_holdout=0.01, data_dir=str(data_dir))
    assert not (data_dir / "artifacts" / "models").exists()
