"""Shipping: every export format written by the real exporters and loaded back, scores kept within each
format's tolerance, the model card's lineage, and the export / push commands."""

from __future__ import annotations

import contextlib
import json
import threading
from http.server import ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest

from flows import cli
from tasks.evaluation.data import stsb_pairs
from tasks.evaluation.stsb import cosine
from tasks.models.resolve import bundled_minilm_dir
from tasks.shipping import card, exports, release
from tasks.shipping.backends import load_export
from tasks.shipping.compare import TOLERANCE
from tasks.store.artifacts import ArtifactRef
from tasks.store.catalog import MODEL_FOLDER
from tasks.store.runs import RunRecord

TEXTS = ["A man is playing a guitar.", "A woman slices a tomato on a board.", "Two dogs run through the snow.",
         "The stock market fell sharply today, and analysts blamed rising interest rates."] * 8  # fmt: skip


@pytest.fixture(scope="module")
def tiny_exports(tiny_bert, tmp_path_factory) -> dict[str, Path]:
    """Each format's export folder, ``<fmt>/model`` as in an export artifact."""
    root = tmp_path_factory.mktemp("exports")
    return {fmt: _export(tiny_bert, fmt, root / fmt / MODEL_FOLDER) for fmt in exports.FORMATS}


def _export(model: Path, fmt: str, out: Path) -> Path:
    exports.export_model(model, fmt, out)
    return out


def _torch(folder: Path):
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(str(folder), device="cpu")


@pytest.mark.parametrize("fmt", list(exports.FORMATS))
def test_every_format_loads_and_encodes_like_its_model(tiny_bert, tiny_exports, fmt):
    folder = tiny_exports[fmt]
    assert json.loads((folder / exports.EXPORT_FILE).read_text())["format"] == fmt
    reference = _torch(tiny_bert).encode(TEXTS)
    vectors = load_export(folder).encode(TEXTS)
    assert vectors.shape[0] == len(TEXTS) and np.isfinite(vectors).all()
    if fmt == "static":
        assert (folder / "modules.json").is_file() and "StaticEmbedding" in (folder / "modules.json").read_text()
        return
    spec = exports.FORMATS[fmt]
    assert (folder / spec.file).is_file() and not (folder / "model.safetensors").exists()  # no torch weights
    assert (folder / "modules.json").is_file() and (folder / "tokenizer.json").is_file()
    difference = np.abs(vectors - reference).max()
    assert difference < (1e-4 if not fmt.endswith("int8") else 0.1), difference


def test_an_export_runs_in_sentence_transformers_layout(tiny_exports):
    """The folders hold the files where sentence-transformers' ONNX / OpenVINO backends look for them."""
    assert (tiny_exports["onnx"] / "onnx" / "model.onnx").is_file()
    assert (tiny_exports["onnx-int8"] / "onnx" / "model_qint8.onnx").is_file()
    assert (tiny_exports["openvino"] / "openvino" / "openvino_model.xml").is_file()
    assert (tiny_exports["openvino"] / "openvino" / "openvino_model.bin").is_file()
    assert (tiny_exports["openvino-int8"] / "openvino" / "openvino_model_qint8.xml").is_file()
    import onnx

    graph = onnx.load(str(tiny_exports["onnx"] / "onnx" / "model.onnx"))
    assert [i.name for i in graph.graph.input] == ["input_ids", "attention_mask", "token_type_ids"]
    assert [o.name for o in graph.graph.output] == ["last_hidden_state"]


def test_a_release_folder_loads_in_every_format_it_holds(tiny_bert, tiny_exports, tmp_path):
    """lay_out's folder: every export where sentence-transformers looks, the int8 ONNX file also under the ONNX
    layout's names (one inode), and load_export(release, fmt) the same model as the export folder's."""
    out = tmp_path / "release"
    release.lay_out(tiny_bert, out, {f: ArtifactRef("exports", f, str(p.parent)) for f, p in tiny_exports.items()})
    assert exports.formats_in(out) == list(exports.FORMATS)
    int8 = out / exports.FORMATS["onnx-int8"].file
    assert {(out / alias).stat().st_ino for alias in exports.RELEASE_ALIASES["onnx-int8"]} == {int8.stat().st_ino}
    for fmt, folder in tiny_exports.items():
        vectors = load_export(out, fmt).encode(TEXTS)
        assert np.abs(vectors - load_export(folder).encode(TEXTS)).max() < 1e-5, fmt


def test_load_export_names_what_a_folder_lacks(tiny_bert, tiny_exports, tmp_path):
    assert load_export(tiny_exports["onnx"], "onnx").encode(["a sentence"]).shape == (1, 32)
    with pytest.raises(ValueError, match="an export of onnx, not of onnx-int8"):
        load_export(tiny_exports["onnx"], "onnx-int8")
    with pytest.raises(ValueError, match=r"neither an export \(no export.json\) nor a release folder \(no modules"):
        load_export(tmp_path)
    with pytest.raises(ValueError, match=r"no static export in this release folder \(static/modules.json missing\)"):
        load_export(tiny_bert, "static")  # a model folder: no export in it


def test_an_unknown_format_or_a_folder_that_is_no_model_fails_clearly(tmp_path):
    with pytest.raises(ValueError, match=r"export_formats: \['tflite'\] not among"):
        exports.check_formats(["onnx", "tflite"])
    with pytest.raises(exports.ExportError, match="no modules.json"):
        exports.export_model(tmp_path, "onnx", tmp_path / "out")


def test_bundled_minilm_keeps_its_sts_b_anchor_in_every_format(tmp_path):
    """STS-B test Spearman of each export of the bundled model against PyTorch's (0.8203), within the
    format's tolerance (fp32 formats 0.001, int8 0.01, static 0.2)."""
    from tasks.models.encoding import encode_in_token_order

    pairs = stsb_pairs("test", None)
    texts = [*pairs["sentence1"], *pairs["sentence2"]]
    gold = (pairs["score"] / 5.0).to_numpy()

    def spearman(model) -> float:
        vectors = encode_in_token_order(model, texts, 64, convert_to_numpy=True)
        from scipy.stats import spearmanr

        return float(spearmanr(gold, cosine(vectors[: len(pairs)], vectors[len(pairs) :])).statistic)

    reference = spearman(_torch(bundled_minilm_dir()))
    assert round(reference, 4) == 0.8203
    for fmt in exports.FORMATS:
        score = spearman(load_export(_export(bundled_minilm_dir(), fmt, tmp_path / fmt)))
        assert abs(score - reference) <= TOLERANCE[fmt], (fmt, score, reference)


def test_card_states_every_lineage_field(tmp_path, tiny_bert):
    record = RunRecord.from_dict(
        {
            "source": "data/samples/mnli/train.parquet",
            "source_identity": {"kind": "local", "file": "train.parquet", "sha256": "f00d"},
            "train_recipe": {"loss": "mnr", "epochs": 1},
            "mining": {"strategy": "semi-hard"},
            "base_model": {"name": "tiny", "source": "local"},
            "metrics": {"stsb_test_spearman": {"base": 0.5, "trained": 0.6}},
            "champion": {"promoted": False, "reason": "kept: not better", "metric": "stsb_test_spearman"},
            "artifacts": {"model": {"stage": "models", "key": "abc", "path": "/data/artifacts/models/abc"}},
            "environment": {"python": "3.11", "libraries": {"torch": "2.13.0"}},
        }
    )
    lineage = card.lineage_from_run(record, None)
    out = tmp_path / "release"
    out.mkdir()
    card.write_card(tiny_bert, out, lineage, ["onnx"])
    assert card.missing_fields(out) == []
    text = (out / card.CARD).read_text()
    assert "sha256 `f00d`" in text and "| stsb_test_spearman | 0.5000 | 0.6000 |" in text
    assert (
        "not promoted: kept: not better" in text and '"torch": "2.13.0"' in text and 'load_export(path, "onnx")' in text
    )
    lineage["source"] = {}
    (out / card.LINEAGE).write_text(json.dumps(lineage))
    assert card.missing_fields(out) == ["source"]


def test_export_command_writes_keyed_artifacts_once(tiny_bert, tmp_path, capsys):
    data = tmp_path / "data"
    assert cli.main(["export", str(tiny_bert), "--format", "onnx", "--data-dir", str(data)]) == 0
    first = capsys.readouterr().out
    assert "exported" in first
    assert cli.main(["export", str(tiny_bert), "--format", "onnx", "--data-dir", str(data)]) == 0
    assert "cached" in capsys.readouterr().out
    [folder] = list((data / "artifacts" / "exports").iterdir())
    assert load_export(folder / "model").encode(["a sentence"]).shape == (1, 32)
    assert cli.main(["inspect", f"exports/{folder.name}", "--data-dir", str(data)]) == 0
    assert "onnx/model.onnx" in capsys.readouterr().out


def test_export_command_names_what_it_cannot_find(tmp_path, capsys):
    assert cli.main(["export", "champion", "--format", "onnx", "--data-dir", str(tmp_path)]) == 2
    assert "no champion yet" in capsys.readouterr().err
    assert cli.main(["export", "models/0123456789abcdef", "--format", "onnx", "--data-dir", str(tmp_path)]) == 2
    assert "no such model artifact" in capsys.readouterr().err
    assert cli.main(["export", str(tmp_path), "--format", "onnx", "--data-dir", str(tmp_path)]) == 2
    assert "no modules.json" in capsys.readouterr().err


def test_push_offline_fails_before_anything_is_exported_or_uploaded(tiny_bert, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("HF_TOKEN", "hf_TESTSECRETdoNotLeak0123456789")
    data = tmp_path / "data"
    code = cli.main(["push", str(tiny_bert), "--repo", "org/name", "--format", "onnx", "--data-dir", str(data)])
    assert code == 2
    err = capsys.readouterr().err
    assert "cannot be reached" in err and "nothing was exported or uploaded" in err
    assert not data.exists()
    assert cli.main(["push", str(tiny_bert), "--repo", "not-a-repo", "--data-dir", str(data)]) == 2
    assert "not <owner>/<name>" in capsys.readouterr().err


@contextlib.contextmanager
def stand_in_hub(monkeypatch, home: Path):
    """The loopback stand-in of the Hub (tests/test_publish.py) as huggingface_hub's endpoint, the hub
    reported reachable, HF_TOKEN set to the marker token."""
    import huggingface_hub

    from tests.test_publish import TOKEN, StandInHub, _handler

    hub = StandInHub()
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(hub))
    hub.base = f"http://127.0.0.1:{server.server_address[1]}"
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(huggingface_hub.constants, "ENDPOINT", hub.base)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_DISABLE_XET", True)
    monkeypatch.setenv("HF_HOME", str(home))
    for name in ("tasks.models.resolve.hub_reachable", "flows.checks.hub_reachable"):
        monkeypatch.setattr(name, lambda timeout=3.0: True)
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    try:
        yield hub
    finally:
        server.shutdown()
        server.server_close()


def assert_token_nowhere(root: Path, logs: str) -> None:
    from tests.test_publish import TOKEN

    for path in root.rglob("*"):
        if path.is_file():
            assert TOKEN.encode() not in path.read_bytes(), path
    assert TOKEN not in logs


def test_push_command_uploads_model_card_and_exports_to_a_stand_in_hub(tiny_bert, tmp_path, monkeypatch, caplog):
    """The push command's whole path, the real huggingface_hub client against the loopback stand-in; the
    token is in the Authorization header and nowhere else."""
    from tests.test_publish import TOKEN

    caplog.set_level("DEBUG")
    data = tmp_path / "data"
    argv = ["push", str(tiny_bert), "--repo", "org/tiny", "--private", "--format", "onnx", "--format", "static"]
    with stand_in_hub(monkeypatch, tmp_path / "hf-home") as hub:
        assert cli.main([*argv, "--data-dir", str(data)]) == 0
    uploaded = hub.files["org/tiny"]
    assert {"README.md", "lineage.json", "modules.json", "model.safetensors", "onnx/model.onnx"} <= set(uploaded)
    assert "static/modules.json" in uploaded and "manifest.json" not in uploaded
    assert card.SECTION.encode() in uploaded["README.md"]
    assert hub.repos["org/tiny"]["visibility"] == "private"
    assert {seen.authorization for seen in hub.requests} == {f"Bearer {TOKEN}"}
    assert_token_nowhere(tmp_path, caplog.text)
