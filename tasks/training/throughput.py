"""Training throughput: samples and real tokens per second, and model FLOPs utilisation on a known GPU."""

from __future__ import annotations

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
