"""What this machine runs a recipe with: mixed precision, the attention kernel, and the cached loss when a
batch would not fit in GPU memory.

One place for the hardware policy, so that the trainer reads as the recipe and the policy can be
read and tested on its own. The CPU trains in fp32 with SDPA and the plain loss.
"""

from __future__ import annotations

import logging

import numpy as np

log = logging.getLogger(__name__)

ATTENTION = ("auto", "sdpa", "eager", "flash_attention_2", "flash_attention_3", "flash_attention_4")
CACHED_MINI_BATCH = 32  # the cached loss's mini batch when "auto" finds that a batch would not fit


def mixed_precision(precision: str) -> str:
    """What actually runs: mixed precision only on CUDA, bf16 only where the GPU supports it ("no": fp32)."""
    import torch

    if not torch.cuda.is_available() or precision == "fp32":
        return "no"
    if precision == "bf16" and torch.cuda.is_bf16_supported():
        return "bf16"
    return "fp16"


def device_name() -> str:
    import torch

    return f"cuda ({torch.cuda.get_device_name(0)})" if torch.cuda.is_available() else "cpu"


def attention_implementation(requested: str) -> str | None:
    """The attention kernel to load the model with: flash attention where it is installed and the GPU
    can run it (sentence-transformers then unpads text by itself), else the model's default (SDPA)."""
    import torch

    if requested != "auto":
        return requested
    if not torch.cuda.is_available():
        return None
    from transformers.utils import import_utils

    major = torch.cuda.get_device_capability()[0]
    for name, check, min_major in (
        ("flash_attention_4", "is_flash_attn_4_available", 9),
        ("flash_attention_3", "is_flash_attn_3_available", 9),
        ("flash_attention_2", "is_flash_attn_2_available", 8),
    ):
        if major >= min_major and getattr(import_utils, check, lambda: False)():
            return name
    return None


def load_for_training(model_location: str, attention: str):
    """The SentenceTransformer to train and the kernel it runs; a flash-attention build that fails to load
    falls back to SDPA."""
    from sentence_transformers import SentenceTransformer

    implementation = attention_implementation(attention)
    if implementation is None:
        return SentenceTransformer(model_location, trust_remote_code=False), "default"
    try:
        kwargs = {"attn_implementation": implementation}
        return SentenceTransformer(model_location, trust_remote_code=False, model_kwargs=kwargs), implementation
    except (ImportError, ValueError, RuntimeError) as exc:
        if attention != "auto":
            raise
        log.warning("attention %s unavailable (%s); using the default", implementation, exc)
        return SentenceTransformer(model_location, trust_remote_code=False), "default"


def activation_bytes(model, tokens_per_step: float) -> float:
    """Rough activation memory of one training step: about 34 bytes per token, layer and hidden unit
    in 16-bit precision (Korthikanti et al., 2022, without the attention matrix that SDPA never stores)."""
    config = model[0].auto_model.config
    layers = getattr(config, "num_hidden_layers", 12)
    hidden = getattr(config, "hidden_size", 768)
    return 34.0 * tokens_per_step * layers * hidden


def mini_batch_for(requested: int, ranking: bool, model, row_lengths: list[np.ndarray], batch_size: int) -> int:
    """The cached loss's mini batch (0: the plain loss): as asked, or with "auto" (-1) only when a batch of
    ``batch_size`` rows (``row_lengths``: tokens per row of each column) would not fit in free GPU memory."""
    import torch

    if requested >= 0 or not ranking:
        return max(0, requested)
    if not torch.cuda.is_available():
        return 0
    per_row = sum(float(np.percentile(lengths, 99)) for lengths in row_lengths)
    weights = 16.0 * sum(p.numel() for p in model.parameters())  # weights, gradients, two Adam moments
    free = torch.cuda.mem_get_info()[0]
    needed = activation_bytes(model, per_row * batch_size) + weights
    return 0 if needed < 0.7 * free else CACHED_MINI_BATCH
