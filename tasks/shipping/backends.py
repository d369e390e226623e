"""Loading an export as a SentenceTransformer: the same ``encode``, prompts, pooling and normalisation,
with the transformer run by onnxruntime or OpenVINO.

sentence-transformers' ``backend="onnx"`` / ``"openvino"`` go through optimum, which does not install beside
transformers 5.23 (``tasks/shipping/exports.py``). ``load_export`` builds the same model from the export's
folder with its Transformer module swapped for one whose network is an onnxruntime session or an OpenVINO
compiled model; the torch weights are neither needed nor read. Static exports load as they are. A release
folder holds every format released (``load_export(release, "onnx-int8")``).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from tasks.shipping.exports import EXPORT_FILE, FORMATS, STATIC_FOLDER, Format, check_formats, formats_in, read_export


class ExportedNetwork:
    """The transformer's forward over an exported graph: token ids in, ``last_hidden_state`` out, as the
    ``model`` of sentence-transformers' Transformer module (what optimum's ORTModel is to it)."""

    def __init__(self, path: Path, backend: str, config, threads: int | None = None) -> None:
        self.config, self.backend, self.path = config, backend, path
        if backend == "onnx":
            import onnxruntime as ort

            options = ort.SessionOptions()
            if threads:
                options.intra_op_num_threads = threads
            self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
            self.inputs = [i.get_name() if hasattr(i, "get_name") else i.name for i in self.session.get_inputs()]
        else:
            import openvino as ov

            # fp32 on every CPU: OpenVINO would otherwise run bf16 where the CPU has AMX, and change the scores
            settings = {"INFERENCE_PRECISION_HINT": "f32", "PERFORMANCE_HINT": "LATENCY"}
            if threads:
                settings["INFERENCE_NUM_THREADS"] = threads
            self.compiled = ov.Core().compile_model(str(path), "CPU", settings)
            self.inputs = [i.get_any_name() for i in self.compiled.inputs]
            self.request = self.compiled.create_infer_request()

    def __call__(self, **features):
        return self.forward(**features)

    def forward(self, input_ids, attention_mask=None, token_type_ids=None, **_):
        import torch
        from transformers.modeling_outputs import BaseModelOutput

        given = {"input_ids": input_ids, "attention_mask": attention_mask, "token_type_ids": token_type_ids}
        if given["attention_mask"] is None:
            given["attention_mask"] = torch.ones_like(input_ids)
        if given["token_type_ids"] is None:
            given["token_type_ids"] = torch.zeros_like(input_ids)
        feed = {name: given[name].cpu().numpy().astype(np.int64) for name in self.inputs}
        if self.backend == "onnx":
            hidden = self.session.run(None, feed)[0]
        else:
            hidden = self.request.infer(feed)[0].copy()
        return BaseModelOutput(last_hidden_state=torch.from_numpy(hidden))

    # what sentence-transformers asks of a model it holds
    def save_pretrained(self, *args, **kwargs):
        raise NotImplementedError(f"an export is saved as it was written: copy {self.path.parent.parent}")

    def modules(self):
        return iter(())

    def to(self, *args, **kwargs):
        return self

    def eval(self):
        return self

    def train(self, mode: bool = True):
        return self

    def parameters(self):
        return iter(())

    def named_parameters(self, *args, **kwargs):
        return iter(())


def _transformer_types(folder: Path) -> set[str]:
    return {m["type"] for m in json.loads((folder / "modules.json").read_text()) if m["type"].endswith("Transformer")}


def export_to_load(folder: Path, fmt: str | None) -> tuple[Format, Path]:
    """Which format to load and from where: an export folder (``export.json`` says which; ``fmt``, if given, must
    agree), or a release folder, which holds several (``fmt`` names one). Anything else fails naming what lacks."""
    record = read_export(folder)
    if record is not None:
        if fmt is not None and fmt != record["format"]:
            raise ValueError(f"{folder}: an export of {record['format']}, not of {fmt}")
        return FORMATS[record["format"]], folder
    if not (folder / "modules.json").is_file():
        raise ValueError(f"{folder}: neither an export (no {EXPORT_FILE}) nor a release folder (no modules.json)")
    held = formats_in(folder)
    if fmt is None:
        raise ValueError(
            f"{folder}: no {EXPORT_FILE}, so read as a release folder: name the format to load, "
            f"load_export(folder, fmt), one of {held}; or load the model itself with SentenceTransformer"
        )
    spec = FORMATS[check_formats([fmt], "format")[0]]
    if spec.name not in held:
        wanted = spec.file or f"{STATIC_FOLDER}/modules.json"
        raise ValueError(f"{folder}: no {spec.name} export in this release folder ({wanted} missing); it holds {held}")
    return spec, (folder / STATIC_FOLDER if spec.backend == "torch" else folder)


def load_export(folder: str | Path, fmt: str | None = None, threads: int | None = None):
    """An export as a SentenceTransformer on the CPU: an export folder's, or ``fmt`` of a release folder
    (``load_export(release, "onnx-int8")``); a release's torch weights are not read for an exported format."""
    import torch
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.base.modules.transformer import Transformer

    spec, folder = export_to_load(Path(folder), fmt)
    if spec.backend == "torch":
        return SentenceTransformer(str(folder), device="cpu")
    network_file = folder / spec.file

    class ExportedTransformer(Transformer):
        """sentence-transformers' Transformer with the exported network in place of the torch one."""

        def _load_model(self, model_name_or_path, transformer_task, config, backend, is_peft_model, **kwargs):
            return ExportedNetwork(network_file, spec.backend, config, threads)

    # sentence-transformers' own hook for loading a saved model with given module classes (no optimum here);
    # private in the pinned 6.2.0, so a sentence-transformers upgrade is checked by tests/test_shipping.py
    if not hasattr(SentenceTransformer, "_load_with_module_classes"):
        raise RuntimeError(
            f"sentence-transformers {__import__('sentence_transformers').__version__} has no "
            "_load_with_module_classes: load exports with SentenceTransformer(path, backend=...) and optimum"
        )
    classes = dict.fromkeys(_transformer_types(folder), ExportedTransformer)
    model = SentenceTransformer._load_with_module_classes(str(folder), classes, device="cpu")
    model.to(torch.device("cpu"))
    return model


# How each export loads, as tests/test_stock_runtimes.py runs it from a release folder (``path``); the
# sentence-transformers backends need optimum, which does not install beside sentence-transformers 6
JS_USAGE = (
    'transformers.js: `await pipeline("feature-extraction", "<folder>", {dtype: "{dtype}"})`, then'
    ' `extractor(texts, {pooling: "{pooling}", normalize: {normalize}})`'
)
POOLING_FLAGS = {"pooling_mode_mean_tokens": "mean", "pooling_mode_cls_token": "cls", "pooling_mode_max_tokens": "max"}
FORMAT_USAGE = {
    "onnx": "onnxruntime: `onnx/model.onnx`, the tokenizer's `tokenizer.json` (`tokenizers`), the pooling of"
    " `1_Pooling/config.json`; " + JS_USAGE.replace("{dtype}", "fp32") + '; this project: `load_export(path, "onnx")`',
    "onnx-int8": "onnxruntime: `onnx/model_quantized.onnx` (also `onnx/model_qint8.onnx`), as for onnx; "
    + JS_USAGE.replace("{dtype}", "q8")
    + '; this project: `load_export(path, "onnx-int8")`',
    "openvino": '`load_export(path, "openvino")`',
    "openvino-int8": '`load_export(path, "openvino-int8")`',
    "static": '`SentenceTransformer(path + "/static")` (model2vec StaticEmbedding), or `load_export(path, "static")`',
}


def pooling_of(folder: Path) -> tuple[str, bool]:
    """The model's pooling (``mean``, ``cls``, ``max``) and whether it normalises, from its own module files: what
    a runtime that reads the ONNX layout must be told."""
    try:
        modules = json.loads((folder / "modules.json").read_text())
        pooling = next(m["path"] for m in modules if m["type"].endswith("Pooling"))
        config = json.loads((folder / pooling / "config.json").read_text())
    except (OSError, ValueError, StopIteration):
        return "mean", True  # sentence-transformers' default pooling, and MiniLM's normalisation
    mode = config.get("pooling_mode") or next((m for flag, m in POOLING_FLAGS.items() if config.get(flag)), "mean")
    return mode, any(m["type"].endswith("Normalize") for m in modules)


def export_usage_lines(formats: list[str], pooling: tuple[str, bool] = ("mean", True)) -> list[str]:
    """How to load each export in this folder, for a model of ``pooling`` (``pooling_of``): the card's usage
    lines, one place to change them."""
    mode, normalize = pooling
    filled = {"{pooling}": mode, "{normalize}": "true" if normalize else "false"}
    lines = []
    for fmt in formats:
        usage = FORMAT_USAGE[fmt]
        for placeholder, value in filled.items():
            usage = usage.replace(placeholder, value)
        lines.append(f"- `{fmt}`: {usage}")
    return lines
