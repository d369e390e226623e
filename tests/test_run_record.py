"""The typed run record: one contract for the card, gc, the CLI and compare-losses; older records still read."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tasks.store import cleanup
from tasks.store.artifacts import ArtifactRef, artifacts_root
from tasks.store.runs import ModelFacts, RunArtifacts, RunRecord, latest_run_of, read_run_record, write_run_record

ROOT = Path(__file__).resolve().parent.parent


def _ref(data: Path, stage: str, key: str) -> ArtifactRef:
    folder = artifacts_root(data) / stage / key
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "data.txt").write_text("x")
    files = {"data.txt": {"bytes": 1, "sha256": hashlib.sha256(b"x").hexdigest()}}
    (folder / "manifest.json").write_text(json.dumps({"stage": stage, "key": key, "parents": [], "files": files}))
    return ArtifactRef(stage, key, str(folder), 3)


def _legacy_record(data: Path) -> dict:
    """A record as the flow wrote it before the stage names: no stage in the entries, older step names."""
    refs = {"pairs": _ref(data, "raw", "r1"), "loss-format": _ref(data, "pairs", "p1"),
            "train-data": _ref(data, "triplets", "t1"), "tokens": _ref(data, "tokens", "k1"),
            "model": _ref(data, "models", "m1"), "exports-comparison": _ref(data, "comparisons", "c1")}  # fmt: skip
    entries = {step: {"path": r.path, "key": r.key, "rows": r.rows, "cached": False} for step, r in refs.items()}
    return {"source": "x.parquet", "base_model": {"name": "b", "source": "local", "location": "/b"},
            "miner_model": {"name": "m", "source": "bundled"}, "artifacts": entries, "metrics": {}}  # fmt: skip


def test_a_record_written_before_the_stage_names_reads_under_them(tmp_path):
    path = artifacts_root(tmp_path) / "runs" / "20250101T000000000000Z.json"
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps(_legacy_record(tmp_path)))
    record = read_run_record(path)
    artifacts = record.artifacts
    assert (artifacts.raw.stage, artifacts.pairs.stage, artifacts.triplets.stage) == ("raw", "pairs", "triplets")
    assert artifacts.comparison.key == "c1" and artifacts.training_data == artifacts.triplets
    assert record.miner_model == ModelFacts("m", "bundled") and record.path == str(path)
    assert latest_run_of(tmp_path, "m1") == record
    # gc keeps every artifact the old record names
    stale = {p.name for p in cleanup.unreferenced(tmp_path, keep_runs=5, min_age_hours=0)}
    assert not {"r1", "p1", "t1", "k1", "m1", "c1"} & stale


def test_without_mined_negatives_a_legacy_record_has_no_triplets(tmp_path):
    facts = _legacy_record(tmp_path)
    facts["artifacts"]["train-data"] = facts["artifacts"]["loss-format"]
    record = RunRecord.from_dict(facts)
    assert record.artifacts.triplets is None and record.artifacts.training_data == record.artifacts.pairs


def test_a_record_round_trips_and_an_unknown_artifact_is_not_a_record(tmp_path):
    refs = {name: _ref(tmp_path, stage, name[:3]) for name, stage in
            [("raw", "raw"), ("pairs", "pairs"), ("tokens", "tokens"), ("model", "models")]}  # fmt: skip
    record = RunRecord({"max_pairs": 5}, "x.parquet", {}, {}, {}, ModelFacts("b", "local", "/b"), None,
                       RunArtifacts(**refs, exports={"onnx": _ref(tmp_path, "exports", "e1")}), {}, {}, {})  # fmt: skip
    written = write_run_record(tmp_path, record)
    again = read_run_record(Path(written.path))
    assert again == written and again.artifacts.exports["onnx"].key == "e1"
    assert list(written.as_dict()["artifacts"]) == ["raw", "pairs", "tokens", "model", "export-onnx"]
    broken = Path(written.path).with_name("20990101T000000000000Z.json")
    broken.write_text(json.dumps({"artifacts": {"wobbly": {"path": "/x", "key": "k"}}}))
    with pytest.raises(ValueError, match="not a run record"):
        read_run_record(broken)
    broken.write_text("[1, 2]")
    with pytest.raises(ValueError, match="not a run record"):
        read_run_record(broken)


def test_the_source_columns_are_checked_at_the_commit_the_rows_are_read_from(monkeypatch):
    """check_source runs on what pin_source returned, not on the revision the user named."""
    from flows import checks

    seen = []
    monkeypatch.setattr(checks.sources, "source_columns", lambda source: seen.append(source) or ["anchor", "positive"])
    with pytest.raises(ValueError, match="needs NLI labels"):
        checks.check_source("org/data@" + "a" * 40, "softmax", "none")
    assert seen == ["org/data@" + "a" * 40]
    source = (ROOT / "flows" / "train_embeddings.py").read_text()
    assert source.index("source = sources.pin_source(") < source.index("check_source(source,")
    assert source.index("scored = None if eval_source is None else sources.pin_source(") < source.index(
        "check_eval_source(scored)"
    )
    checked = (ROOT / "flows" / "checks.py").read_text()
    assert "source_columns" not in checked.split("def check_settings")[1].split("def check_source")[0]


def test_a_flow_called_from_python_waits_for_prefects_server_as_the_cli_does():
    """Prefect's 20 s start timeout is raised when a flow module is imported, before Prefect reads its settings."""
    env = {k: v for k, v in os.environ.items() if k != "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS"}
    code = (
        "from flows.compare_losses import compare_losses\n"
        "from prefect.settings import PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS as S\n"
        "print(S.value())"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, check=True)
    assert out.stdout.strip().splitlines()[-1] == "120"
