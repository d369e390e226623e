"""A release folder's ONNX exports run in runtimes this project did not write, from the folder's own files:
onnxruntime with the tokenizers library (pooling and normalisation as the folder's modules state them), and
transformers.js under node (tests/js, installed by ``make setup``), each against the PyTorch model on real
STS-B sentences; and ``load_export`` on the release folder itself.

The model is the bundled all-MiniLM-L6-v2 in both layouts a release may hold: as sentence-transformers 6 saves
it (every model this pipeline trains; ``"pooling_mode": "mean"``) and as published (``pooling_mode_mean_tokens``).
The tiny random BERT of the other tests would not do for int8: its int8 vectors keep a cosine of 1.0000 to its
own (32 dimensions, narrow activations), so it would show nothing of what int8 costs a real model.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from tasks.evaluation.data import stsb_pairs
from tasks.models.resolve import ResolvedModel, bundled_minilm_dir, folder_fingerprint
from tasks.shipping import card, exports, release
from tasks.shipping.backends import load_export
from tasks.store.artifacts import read_manifest, verify

JS = Path(__file__).parent / "js"
NODE = shutil.which("node")
# Cosine of each sentence's vector to the PyTorch model's: the mean over the sentences, and the least. Dynamic int8
# costs short sentences most (all of STS-B test: mean 0.992, least 0.963 for "You got it right.", 2% under 0.98;
# uint8 weights or fp32 embeddings do no better), so int8's 0.98 bounds the mean, and the least is kept above 0.95
MEAN_COSINE = {"onnx": 0.999, "onnx-int8": 0.98}
MIN_COSINE = {"onnx": 0.999, "onnx-int8": 0.95}
ONNX_FILE = {"onnx": "onnx/model.onnx", "onnx-int8": "onnx/model_quantized.onnx"}  # the ONNX-layout names
JS_DTYPE = {"onnx": "fp32", "onnx-int8": "q8"}  # transformers.js' dtype for each (it picks the file by it)


@pytest.fixture(scope="module")
def sentences() -> list[str]:
    """128 real sentences of every length STS-B test has."""
    pairs = stsb_pairs("test")
    return [*pairs["sentence1"], *pairs["sentence2"]][::21][:128]


@pytest.fixture(scope="module", params=["saved-by-sentence-transformers-6", "as-published"])
def minilm(request, tmp_path_factory) -> Path:
    """The model folder: re-saved by the installed sentence-transformers (the trained models' layout), or as is."""
    if request.param == "as-published":
        return bundled_minilm_dir()
    from sentence_transformers import SentenceTransformer

    folder = tmp_path_factory.mktemp("minilm") / "model"
    SentenceTransformer(str(bundled_minilm_dir()), device="cpu").save(str(folder))
    return folder


@pytest.fixture(scope="module")
def shipped(minilm, tmp_path_factory) -> release.Shipment:
    """The release as the pipeline makes it (exports, lay_out, card, manifest), not measured against the model."""
    model = ResolvedModel("minilm", str(minilm), "local", folder_fingerprint(minilm))
    lineage = card.lineage_from_run(None)  # a model with no run behind it: the card states what is known
    return release.ship(model, ["onnx", "onnx-int8"], lineage, str(tmp_path_factory.mktemp("data")))


@pytest.fixture(scope="module")
def reference(minilm, sentences) -> np.ndarray:
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(str(minilm), device="cpu").encode(sentences)


def cosines(vectors: np.ndarray, reference: np.ndarray) -> np.ndarray:
    vectors = np.asarray(vectors, dtype=np.float64)
    return (vectors * reference).sum(axis=1) / np.linalg.norm(vectors, axis=1) / np.linalg.norm(reference, axis=1)


def assert_near(runtime: str, fmt: str, vectors: np.ndarray, reference: np.ndarray) -> None:
    near = cosines(vectors, reference)
    print(f"{runtime} {fmt}: cosine to PyTorch mean {near.mean():.6f}, least {near.min():.6f}")
    assert near.mean() >= MEAN_COSINE[fmt] and near.min() >= MIN_COSINE[fmt], (runtime, fmt, near.mean(), near.min())


# sentence-transformers before 6 states the pooling as flags, 6 as {"pooling_mode": "mean"}
POOLING_FLAGS = {"pooling_mode_mean_tokens": "mean", "pooling_mode_cls_token": "cls", "pooling_mode_max_tokens": "max"}


def onnxruntime_embeddings(path: str, file_name: str, sentences: list[str]) -> np.ndarray:
    """What a user runs with onnxruntime, tokenizers and numpy alone (the card's lines): the tokenizer, the
    length, the pooling and the normalisation all read from the release folder."""
    import onnxruntime as ort
    from tokenizers import Tokenizer

    def read(name: str) -> dict:
        return json.loads(Path(path, name).read_text())

    modules = read("modules.json")
    pooling = read(next(m["path"] for m in modules if m["type"].endswith("Pooling")) + "/config.json")
    mode = pooling.get("pooling_mode") or next(mode for flag, mode in POOLING_FLAGS.items() if pooling.get(flag))
    tokenizer = Tokenizer.from_file(f"{path}/tokenizer.json")
    tokenizer.enable_truncation(read("sentence_bert_config.json").get("max_seq_length")
                                or read("tokenizer_config.json")["model_max_length"])  # fmt: skip
    tokenizer.enable_padding()
    session = ort.InferenceSession(f"{path}/{file_name}", providers=["CPUExecutionProvider"])
    batch = tokenizer.encode_batch(sentences)
    given = {"input_ids": [e.ids for e in batch], "attention_mask": [e.attention_mask for e in batch],
             "token_type_ids": [e.type_ids for e in batch]}  # fmt: skip
    hidden = session.run(None, {i.name: np.array(given[i.name], dtype=np.int64) for i in session.get_inputs()})[0]
    mask = np.array(given["attention_mask"])[..., None]  # hidden: last_hidden_state, batch × tokens × dimensions
    if mode == "mean":
        embeddings = (hidden * mask).sum(axis=1) / mask.sum(axis=1)
    elif mode == "cls":
        embeddings = hidden[:, 0]
    elif mode == "max":
        embeddings = np.where(mask > 0, hidden, -np.inf).max(axis=1)
    else:
        raise ValueError(f"pooling {mode!r} is not written out here")
    if any(m["type"].endswith("Normalize") for m in modules):
        embeddings = embeddings / np.linalg.norm(embeddings, axis=1, keepdims=True)
    return embeddings


def test_the_release_names_each_onnx_file_as_every_runtime_looks_for_it(shipped):
    """sentence-transformers' names and the ONNX layout's: the int8 file's aliases are one inode, each name in
    the release's manifest with the same checksum, and the release verifies."""
    folder = shipped.folder
    int8 = folder / exports.FORMATS["onnx-int8"].file
    assert (folder / "onnx" / "model.onnx").is_file() and int8.is_file()
    files = read_manifest(shipped.release.folder)["files"]
    for alias in exports.RELEASE_ALIASES["onnx-int8"]:
        assert (folder / alias).stat().st_ino == int8.stat().st_ino  # a hard link (this file system allows it)
        assert files[f"model/{alias}"] == files[f"model/{exports.FORMATS['onnx-int8'].file}"]
    assert verify(shipped.release) == []
    assert exports.formats_in(folder) == ["onnx", "onnx-int8"]


@pytest.mark.parametrize("fmt", ["onnx", "onnx-int8"])
def test_onnxruntime_runs_each_export_from_the_release_folder_alone(shipped, reference, sentences, fmt):
    assert_near("onnxruntime", fmt, onnxruntime_embeddings(str(shipped.folder), ONNX_FILE[fmt], sentences), reference)


@pytest.mark.skipif(NODE is None, reason="node is not installed: the transformers.js runtime (tests/js) is not run")
@pytest.mark.parametrize("fmt", ["onnx", "onnx-int8"])
def test_transformers_js_runs_each_export_from_the_release_folder_offline(shipped, reference, sentences, fmt,
                                                                         tmp_path):  # fmt: skip
    installed = JS / "node_modules" / "@huggingface" / "transformers" / "package.json"
    assert installed.is_file(), f"{installed.parent} is missing: `make setup` installs it (npm ci in {JS})"
    given, out = tmp_path / "sentences.json", tmp_path / "embeddings.json"
    given.write_text(json.dumps(sentences))
    command = [NODE, str(JS / "embed.mjs"), str(shipped.folder), JS_DTYPE[fmt], str(given), str(out)]
    done = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-4000:]
    assert_near(f"transformers.js {JS_DTYPE[fmt]}", fmt, np.array(json.loads(out.read_text())), reference)


@pytest.mark.parametrize("fmt", ["onnx", "onnx-int8"])
def test_load_export_takes_the_release_folder_and_a_format(shipped, reference, sentences, fmt):
    assert_near("load_export", fmt, load_export(shipped.folder, fmt).encode(sentences), reference)
    with pytest.raises(
        ValueError, match=r"so read as a release folder: name the format .* one of \['onnx', 'onnx-int8'\]"
    ):
        load_export(shipped.folder)
    with pytest.raises(
        ValueError, match=r"no openvino export in this release folder \(openvino/openvino_model.xml missing\)"
    ):
        load_export(shipped.folder, "openvino")
