"""Loading an export as a SentenceTransformer: the same ``encode``, prompts, pooling and normalisation,
with the transformer run by onnxruntime or OpenVINO.

sentence-transformers' ``backend="onnx"`` / ``"openvino"`` go through optimum, which does not install beside
transformers 5.23 (``tasks/shipping/exports.py``). ``load_export`` builds the same model from the export's
folder with its Transformer module swapped for one whose network is an onnxruntime session or an OpenVINO
compiled model; the torch weights are neither needed nor read. Static exports load as they are.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from tasks.shipping.exports import FORMATS, read_export


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


def load_export(folder: str | Path, threads: int | None = None):
    """The export in ``folder`` (``export.json`` says which), as a SentenceTransformer on the CPU."""
    import torch
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.base.modules.transformer import Transformer

    folder = Path(folder)
    record = read_export(folder)
    if record is None:
        raise ValueError(f"{folder}: not an export (no export.json); load a model folder with SentenceTransformer")
    spec = FORMATS[record["format"]]
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
