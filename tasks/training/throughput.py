"""Training speed on this device: what one more forward pass costs before training (it decides how a batch
is cut into chunks), and after it samples and real tokens per second, and model FLOPs utilisation on a
known GPU."""

from __future__ import annotations

import numpy as np

from tasks.models.precision import Precision
from tasks.training.tokens import TokenizedData, ids_lengths

# Dense fp16/bf16 tensor-core peak, TFLOP/s, by GPU name: the denominator of model FLOPs utilisation.
PEAK_TFLOPS = {"H200": 989.0, "H100": 989.0, "A100": 312.0, "L40S": 362.0, "L4": 121.0, "A10": 125.0, "V100": 125.0}


def training_flops_per_token(model) -> float:
    """6 x non-embedding parameters (forward and backward), the usual estimate for a dense transformer.

    Embedding tables are lookups, not matrix products: counting them would put a small model's
    utilisation above 100% (a 32-wide BERT's 30,522-row table is 98% of its parameters).
    """
    import torch

    lookups = {id(p) for m in model.modules() if isinstance(m, torch.nn.Embedding) for p in m.parameters()}
    return 6.0 * sum(p.numel() for p in model.parameters() if id(p) not in lookups)


def throughput(model, data: TokenizedData, samples: int, seconds: float, pad_ratio: float | None) -> dict:
    """Samples and real tokens per second, padding, and on a known GPU model FLOPs utilisation."""
    import torch

    real = sum(int(v.sum()) for v in ids_lengths(data.table).values())
    tokens_per_sample = real / max(1, len(data))
    out = {
        "samples_per_second": round(samples / seconds, 2),
        "tokens_per_second": round(samples * tokens_per_sample / seconds, 1),
        "tokens_per_sample": round(tokens_per_sample, 1),
        "padded_tokens_per_real": pad_ratio,
        "mfu": None,
    }
    if torch.cuda.is_available():
        name = torch.cuda.get_device_name(0)
        peak = next((v for k, v in PEAK_TFLOPS.items() if k in name), None)
        if peak:
            out["mfu"] = round(training_flops_per_token(model) * out["tokens_per_second"] / (peak * 1e12), 4)
    return out


def measure_chunk_overhead(model, precision: Precision, length: int = 64, repeats: int = 5) -> int:
    """What one more forward pass costs, in padded tokens' worth of work, measured on this model and device
    in the training ``precision``: the time of a forward and backward pass over 1 and over 16 texts of
    ``length`` tokens, fitted as fixed cost + cost per token (median of ``repeats``). It decides how many
    length-grouped chunks a batch is cut into (``batches.plan_chunks``)."""
    import time

    import torch

    ids = torch.full((16, length), 1000, dtype=torch.long, device=model.device)

    def timed(rows: int) -> float:
        features = {"input_ids": ids[:rows], "attention_mask": torch.ones_like(ids[:rows])}
        if "token_type_ids" in model.preprocess(["a"]):
            features["token_type_ids"] = torch.zeros_like(ids[:rows])
        times = []
        for _ in range(repeats + 1):  # the first is a warm-up
            if model.device.type == "cuda":
                torch.cuda.synchronize(model.device)
            started = time.perf_counter()
            with precision.autocast(model.device.type):
                model(dict(features))["sentence_embedding"].float().sum().backward()
            if model.device.type == "cuda":
                torch.cuda.synchronize(model.device)
            times.append(time.perf_counter() - started)
        model.zero_grad(set_to_none=True)
        return float(np.median(times[1:]))

    one, many = timed(1), timed(16)
    per_token = max((many - one) / (15 * length), 1e-12)
    return int(np.clip((one - per_token * length) / per_token, 0, 8192))
