"""Every export measured against the PyTorch model it came from, in one process on the same texts:
scores (STS-B, the MTEB tasks), CPU encoding speed, size on disk and load time.

Each format's scores come from the pipeline's own evaluation (``evaluate_model``); its speed is texts
per second over the same texts, in the same token-length batches of the same size, after a warm-up
batch, one process; speed and load time are given as ratios against the PyTorch fp32 model measured
in the same call.
"""

from __future__ import annotations

import dataclasses
import gc
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import pandas as pd

from tasks.evaluation.evaluate import evaluate_model
from tasks.evaluation.settings import EvalSettings
from tasks.models.encoding import encode_in_token_order
from tasks.shipping.exports import TORCH_WEIGHTS, folder_bytes

# What a format may cost in score (absolute, on STS-B test and Banking77) before the comparison fails
# (measured on the bundled MiniLM: int8 0.0023 at most, static 0.16 on STS-B test and 0.12 on Banking77)
TOLERANCE = {"onnx": 0.001, "openvino": 0.001, "onnx-int8": 0.01, "openvino-int8": 0.01, "static": 0.2}


def load_pytorch(folder: Path):
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(str(folder), device="cpu")


def texts_per_second(model, texts: Sequence[str], batch_size: int, repeats: int = 1) -> float:
    """Encoding speed over ``texts`` in token-length batches, after one warm-up batch (best of ``repeats``)."""
    encode_in_token_order(model, texts[:batch_size], batch_size, convert_to_numpy=True)
    best = 0.0
    for _ in range(repeats):
        start = time.perf_counter()
        encode_in_token_order(model, texts, batch_size, convert_to_numpy=True)
        best = max(best, len(texts) / (time.perf_counter() - start))
    return best


def serving_bytes(folder: Path, fmt: str) -> int:
    """Bytes a service loads for the format: the export folder, or the model folder itself for PyTorch."""
    if fmt in ("pytorch", "static"):  # a static model's own weights are model.safetensors
        return folder_bytes(folder, lambda p: "checkpoint-" in str(p) or p.name.startswith("."))
    return folder_bytes(folder, lambda p: p.name in TORCH_WEIGHTS)


def measure(
    name: str, loader: Callable[[], object], folder: Path, settings: EvalSettings, texts: Sequence[str],
    batch_size: int, out_dir: Path, repeats: int = 1,
) -> dict:  # fmt: skip
    """One format's row: load time, scores, speed, size."""
    gc.collect()
    start = time.perf_counter()
    model = loader()
    load_seconds = time.perf_counter() - start
    width = model.get_embedding_dimension()  # a static model may be narrower than the dimensions evaluated
    own = dataclasses.replace(settings, dims=tuple(d for d in settings.dims if d <= width))
    metrics = evaluate_model(model, own, out_dir / name)
    speed = texts_per_second(model, texts, batch_size, repeats)
    row = {"format": name, **metrics, "texts_per_second": speed, "load_seconds": load_seconds}
    row["megabytes"] = serving_bytes(folder, name) / 1e6
    del model
    return row


def compare_formats(
    model_folder: Path,
    exports: dict[str, Path],
    settings: EvalSettings,
    texts: Sequence[str],
    out_dir: Path,
    batch_size: int = 64,
    repeats: int = 1,
) -> pd.DataFrame:
    """PyTorch fp32 first, then each export: one row per format, with ``*_delta`` columns (score minus
    PyTorch's), ``speed_ratio``, ``load_ratio`` and ``size_ratio`` against PyTorch, and ``within_tolerance``."""
    from tasks.shipping.backends import load_export

    rows = [measure("pytorch", lambda: load_pytorch(model_folder), model_folder, settings, texts, batch_size,
                    out_dir, repeats)]  # fmt: skip
    for fmt, folder in exports.items():
        rows.append(measure(fmt, lambda f=folder: load_export(f), folder, settings, texts, batch_size, out_dir,
                            repeats))  # fmt: skip
    table = pd.DataFrame(rows)
    reference = table.iloc[0]
    scores = [m for m in settings.metric_names() if m in table]
    for metric in scores:
        table[f"{metric}_delta"] = table[metric] - reference[metric]
    table["speed_ratio"] = table["texts_per_second"] / reference["texts_per_second"]
    table["load_ratio"] = table["load_seconds"] / reference["load_seconds"]
    table["size_ratio"] = table["megabytes"] / reference["megabytes"]
    checked = [f"{m}_delta" for m in scores if m in ("stsb_test_spearman", "banking77_accuracy")]
    table["tolerance"] = [TOLERANCE.get(f, 0.0) for f in table["format"]]
    table["within_tolerance"] = [all(abs(row[c]) <= row["tolerance"] for c in checked) for _, row in table.iterrows()]
    return table


def markdown(table: pd.DataFrame) -> str:
    """The comparison as the README and the report show it."""
    lines = [
        "| format | STS-B test | Δ | Banking77 | Δ | texts/s | speed × | load s | MB | size × |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for _, r in table.iterrows():
        b77 = r.get("banking77_accuracy", float("nan"))
        lines.append(
            f"| {r['format']} | {r['stsb_test_spearman']:.4f} | {r['stsb_test_spearman_delta']:+.4f} | {b77:.4f} | "
            f"{r.get('banking77_accuracy_delta', float('nan')):+.4f} | {r['texts_per_second']:.0f} | "
            f"{r['speed_ratio']:.2f} | {r['load_seconds']:.2f} | {r['megabytes']:.1f} | {r['size_ratio']:.2f} |"
        )
    return "\n".join(lines)
