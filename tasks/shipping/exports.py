"""Exports of a trained model for serving: ONNX and OpenVINO (fp32 and int8) and a distilled static model.

Every export is a sentence-transformers folder in the library's own layout (``onnx/model.onnx``,
``openvino/openvino_model.xml``), so ``SentenceTransformer(path, backend="onnx")`` loads it wherever
optimum-onnx / optimum-intel install. Beside transformers 5.23 neither does (optimum-onnx 0.1.0 caps
transformers<4.58, optimum-intel 2.2.0 caps transformers<5.6), so the exports call the exporters those
wrap directly: ``torch.onnx`` and onnxruntime's dynamic int8 quantizer, OpenVINO's converter and nncf's
int8 weight compression; ``static`` is model2vec's distillation through
``StaticEmbedding.from_distillation``. ``tasks.shipping.backends.load_export`` loads any of them here.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

EXPORT_FILE = "export.json"  # what an export folder holds: its format, backend and model file
TORCH_WEIGHTS = ("model.safetensors", "pytorch_model.bin")


@dataclass(frozen=True)
class Format:
    name: str
    backend: str  # "onnx", "openvino" or "torch" (a static model is a torch module)
    file: str | None  # the model file inside the folder, in sentence-transformers' naming
    libraries: tuple[str, ...]  # whose versions decide the exported bytes (part of the artifact's key)
    summary: str


FORMATS = {
    f.name: f
    for f in (
        Format("onnx", "onnx", "onnx/model.onnx", ("torch", "transformers", "onnx"), "ONNX fp32 (torch.onnx)"),
        Format(
            "onnx-int8",
            "onnx",
            "onnx/model_qint8.onnx",
            ("torch", "transformers", "onnx", "onnxruntime"),
            "ONNX with int8 weights and dynamically quantized activations (onnxruntime.quantization)",
        ),
        Format(
            "openvino",
            "openvino",
            "openvino/openvino_model.xml",
            ("torch", "transformers", "onnx", "openvino"),
            "OpenVINO IR fp32 (openvino.convert_model)",
        ),
        Format(
            "openvino-int8",
            "openvino",
            "openvino/openvino_model_qint8.xml",
            ("torch", "transformers", "onnx", "openvino", "nncf"),
            "OpenVINO IR with int8 weights (nncf.compress_weights)",
        ),
        Format(
            "static",
            "torch",
            None,
            ("model2vec", "skeletoken", "sentence-transformers", "tokenizers", "transformers", "torch"),
            "static token embeddings distilled by model2vec (StaticEmbedding, 256 dimensions)",
        ),
    )
}
STATIC_DIMS = 256  # model2vec's default PCA dimension
STATIC_FOLDER = "static"  # where a release holds the static model (a sentence-transformers folder of its own)

# The other names a release gives an ONNX file (hard links to it), for the runtimes that read the ONNX layout
# themselves: transformers.js loads ``dtype: "q8"`` from, and Optimum's ORTQuantizer writes, model_quantized.onnx;
# sentence-transformers' own quantizer names this configuration (int8 weights per channel, uint8 activations at
# run time, full range: optimum's ``AutoQuantizationConfig.avx512_vnni(is_static=False)``) model_qint8_avx512_vnni.
# fp32's onnx/model.onnx is already the name all of them (and sentence-transformers' ONNX backend) look for.
RELEASE_ALIASES = {"onnx-int8": ("onnx/model_quantized.onnx", "onnx/model_qint8_avx512_vnni.onnx")}


class ExportError(RuntimeError):
    """A model that cannot be exported in a format (the message names both)."""


def check_formats(names: list[str] | tuple[str, ...] | str, parameter: str = "export_formats") -> tuple[str, ...]:
    """The formats asked for, in a stable order; an unknown one fails naming the parameter. A string is read as
    a comma-separated list (what a shell leaves of ``'["onnx","static"]'`` inside ``make run ARGS=...``)."""
    if isinstance(names, str):
        names = [n.strip(" []\"'") for n in names.split(",") if n.strip(" []\"'")]
    unknown = [n for n in names if n not in FORMATS]
    if unknown:
        raise ValueError(f"{parameter}: {unknown} not among {list(FORMATS)}")
    return tuple(n for n in FORMATS if n in names)


def link_or_copy(source, target) -> str:
    """A hard link where the file system allows (artifacts are never modified in place), else a copy."""
    try:
        os.link(source, target)
    except OSError:
        shutil.copy2(source, target)
    return str(target)


def copy_model_files(model_folder: Path, out: Path, weights: bool, link: bool = False) -> None:
    """The sentence-transformers folder without other backends' files (and without the torch weights
    when the export replaces them): config, tokenizer, modules, pooling, card. ``link``: hard links."""
    skip = {"onnx", "openvino", "manifest.json", EXPORT_FILE} | (set() if weights else set(TORCH_WEIGHTS))
    out.mkdir(parents=True, exist_ok=True)
    for path in model_folder.iterdir():
        if path.name in skip or path.name.startswith(("checkpoint-", ".")):
            continue
        copy = link_or_copy if link else shutil.copy2
        if path.is_dir():
            shutil.copytree(path, out / path.name, copy_function=copy)
        else:
            copy(path, out / path.name)


def _input_names(model) -> list[str]:
    """The inputs the transformer takes, in the order the ONNX graph lists them."""
    names = list(getattr(model.tokenizer, "model_input_names", ["input_ids", "attention_mask"]))
    return [n for n in ("input_ids", "attention_mask", "token_type_ids") if n in names]


def export_onnx(model_folder: Path, path: Path) -> None:
    """The transformer as an ONNX graph with dynamic batch and length, outputs ``last_hidden_state`` (what
    optimum's ORTModelForFeatureExtraction and so sentence-transformers' ONNX backend read). TorchScript-based
    exporter, as optimum's: one self-contained file, exported in about a second."""
    import torch
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(str(model_folder), device="cpu")
    transformer = model[0].model.eval()
    names = _input_names(model)
    sample = model.tokenizer(["an example sentence", "another, longer example sentence"], padding=True,
                             return_tensors="pt")  # fmt: skip

    class Backbone(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.transformer = transformer

        def forward(self, *inputs):
            return self.transformer(**dict(zip(names, inputs))).last_hidden_state

    path.parent.mkdir(parents=True, exist_ok=True)
    axes = {n: {0: "batch", 1: "sequence"} for n in [*names, "last_hidden_state"]}
    with torch.inference_mode(False), torch.no_grad():
        torch.onnx.export(
            Backbone(), tuple(sample[n] for n in names), str(path), input_names=names,
            output_names=["last_hidden_state"], dynamic_axes=axes, opset_version=17, dynamo=False,
        )  # fmt: skip


def quantize_onnx(source: Path, path: Path) -> None:
    """int8 weights, activations quantized per batch at run time (no calibration data needed)."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    quantize_dynamic(str(source), str(path), weight_type=QuantType.QInt8, per_channel=True)


def decline_openvino_telemetry() -> None:
    """OpenVINO and nncf count a machine without a consent file as consenting to send usage events: record
    "declined" unless the user has decided already (this project sends no telemetry of its own accord)."""
    try:
        from openvino_telemetry.utils.opt_in_checker import ConsentCheckResult, OptInChecker

        checker = OptInChecker()
        if not os.path.exists(checker.consent_file()):
            checker.create_new_consent_file()
            checker.update_result(ConsentCheckResult.DECLINED)
    except Exception:  # no telemetry package, or no writable home: nothing would be sent from there either
        pass


def convert_openvino(onnx_path: Path, path: Path, int8: bool) -> None:
    """OpenVINO IR converted from the ONNX graph, weights kept fp32 (or compressed to int8 by nncf)."""
    decline_openvino_telemetry()
    import openvino as ov

    model = ov.convert_model(str(onnx_path))
    if int8:
        import nncf

        model = nncf.compress_weights(model)  # int8 per-channel weights, fp32 activations
    path.parent.mkdir(parents=True, exist_ok=True)
    ov.save_model(model, str(path), compress_to_fp16=False)


def distill_static(model_folder: Path, out: Path) -> None:
    """A static embedding model: each vocabulary token encoded once by the model, reduced to 256 dimensions
    by PCA (model2vec); encoding is then a lookup and a mean."""
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer.modules import StaticEmbedding

    static = StaticEmbedding.from_distillation(str(model_folder), device="cpu", pca_dims=STATIC_DIMS)
    SentenceTransformer(modules=[static], device="cpu").save(str(out))


def export_model(model_folder: Path, fmt: str, out: Path, scratch: Path | None = None) -> dict:
    """Write ``fmt`` of the sentence-transformers model in ``model_folder`` to the new folder ``out``;
    returns what ``export.json`` records. ``scratch``: where the intermediate ONNX graph of the OpenVINO
    formats goes (a temporary folder inside ``out`` otherwise, removed after)."""
    spec = FORMATS[check_formats([fmt], "format")[0]]
    if not (model_folder / "modules.json").is_file():
        raise ExportError(f"{model_folder}: not a sentence-transformers model folder (no modules.json)")
    try:
        if spec.name == "static":
            distill_static(model_folder, out)
        else:
            copy_model_files(model_folder, out, weights=False)
            target = out / spec.file
            target.parent.mkdir(parents=True, exist_ok=True)
            if spec.name == "onnx":
                export_onnx(model_folder, target)
            else:
                graph = (scratch or out / ".onnx-graph") / "model.onnx"
                export_onnx(model_folder, graph)
                if spec.name == "onnx-int8":
                    quantize_onnx(graph, target)
                else:
                    convert_openvino(graph, target, int8=spec.name.endswith("int8"))
                if scratch is None:
                    shutil.rmtree(graph.parent, ignore_errors=True)
    except ExportError:
        raise
    except Exception as exc:
        raise ExportError(f"{model_folder}: export to {fmt} failed: {type(exc).__name__}: {exc}") from exc
    record = {"format": spec.name, "backend": spec.backend, "file": spec.file, "summary": spec.summary}
    (out / EXPORT_FILE).write_text(json.dumps(record, indent=2))
    return record


def read_export(folder: Path) -> dict | None:
    """What an export folder holds (``export.json``), or None for a plain model folder."""
    try:
        return json.loads((folder / EXPORT_FILE).read_text())
    except (OSError, ValueError):
        return None


def formats_in(folder: Path) -> list[str]:
    """The formats a release folder holds, by the files sentence-transformers would load each from."""
    held = [name for name, spec in FORMATS.items() if spec.file and (folder / spec.file).is_file()]
    return held + (["static"] if (folder / STATIC_FOLDER / "modules.json").is_file() else [])


def folder_bytes(folder: Path, exclude: Callable[[Path], bool] = lambda p: False) -> int:
    """Bytes on disk of the files a service needs from ``folder``."""
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file() and not exclude(p))
