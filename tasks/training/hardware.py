"""What this machine runs a recipe with: mixed precision, the attention kernel, and the cached loss when a
batch would not fit in GPU memory.

One place for the hardware policy, so that the trainer reads as the recipe and the policy can be
read and tested on its own. The CPU trains in fp32 with SDPA and the plain loss.
"""

from __future__ import annotations

import inspect
import logging
import os

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


FLASH = ("flash_attention_2", "flash_attention_3", "flash_attention_4")


def training_device() -> str:
    """This process's device: its own GPU under torchrun (LOCAL_RANK), else the GPU, else the CPU."""
    import torch

    if not torch.cuda.is_available():
        return "cpu"
    return f"cuda:{int(os.environ.get('LOCAL_RANK', '0'))}"


def attention_dropout_of(model_location: str) -> float:
    """The model's attention dropout, read from its config (BERT's ``attention_probs_dropout_prob``, or
    ``attention_dropout``); 0.1, BERT's, when it cannot be read."""
    from transformers import AutoConfig

    try:
        config = AutoConfig.from_pretrained(model_location)
    except (OSError, ValueError):
        return 0.1
    return float(getattr(config, "attention_probs_dropout_prob", getattr(config, "attention_dropout", 0.0)) or 0.0)


def applies_attention_dropout(implementation: str | None) -> bool:
    """Whether the kernel applies attention dropout while training. Eager and SDPA do; a flash kernel only
    if its functions take ``dropout_p``, since transformers leaves the dropout out, silently, for those that
    do not (flash-attn-4's varlen kernel). A flash kernel that cannot be imported counts as not applying it."""
    if implementation not in FLASH:
        return True
    try:
        from transformers.modeling_flash_attention_utils import lazy_import_flash_attention

        (function, varlen, *_), _ = lazy_import_flash_attention(implementation)
    except Exception:  # not installed, or no GPU it runs on
        return False
    kernels = [f for f in (function, varlen) if f is not None]
    return bool(kernels) and all("dropout_p" in inspect.signature(f).parameters for f in kernels)


def attention_implementation(requested: str, precision: str = "fp16", attention_dropout: float = 0.1) -> str | None:
    """The attention kernel to load the model with. Asked for by name: that one. ``auto``: a flash kernel
    where one is installed and the GPU runs it, only in half precision (flash kernels take no fp32), and
    only one that applies the model's attention dropout, so that auto never trains another model than
    SDPA would; else the model's default (SDPA)."""
    import torch

    if requested != "auto":
        return requested
    if not torch.cuda.is_available() or mixed_precision(precision) == "no":
        return None
    from transformers.utils import import_utils

    major = torch.cuda.get_device_capability()[0]
    for name, check, min_major in (
        ("flash_attention_4", "is_flash_attn_4_available", 9),
        ("flash_attention_3", "is_flash_attn_3_available", 9),
        ("flash_attention_2", "is_flash_attn_2_available", 8),
    ):
        available = major >= min_major and getattr(import_utils, check, lambda: False)()
        if available and (attention_dropout == 0 or applies_attention_dropout(name)):
            return name
    return None


def _probe(model, precision: str) -> None:
    """One forward and backward pass of two short texts in the training precision: a kernel that fails to
    compile or run fails here, before the trainer starts, not at step 1."""
    import torch

    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(mixed_precision(precision))
    features = model.preprocess(["a probe", "a longer probe text"])
    features = {k: v.to(model.device) if hasattr(v, "to") else v for k, v in features.items()}
    model.train()
    with torch.autocast(model.device.type, dtype=dtype or torch.float32, enabled=dtype is not None):
        model(features)["sentence_embedding"].float().sum().backward()
    model.zero_grad(set_to_none=True)


def load_for_training(model_location: str, attention: str, precision: str = "fp16"):
    """The SentenceTransformer to train, in fp32 whatever dtype its checkpoint was saved in (mixed precision
    needs fp32 master weights), and the attention kernel it runs. A flash kernel chosen by ``auto`` that
    fails to load, or fails a forward and backward pass, falls back to SDPA with a warning naming the cause;
    one asked for by name that does not apply the model's attention dropout is used with a warning."""
    import torch
    from sentence_transformers import SentenceTransformer

    dropout = attention_dropout_of(model_location)
    implementation = attention_implementation(attention, precision, dropout)
    kwargs = {"dtype": torch.float32}
    device = training_device()

    def load(extra: dict):
        model = SentenceTransformer(model_location, device=device, trust_remote_code=False, model_kwargs=kwargs | extra)
        return model.float()  # the modules after the transformer (Dense) too

    if implementation is None:
        return load({}), "default"
    if dropout > 0 and not applies_attention_dropout(implementation):
        log.warning(
            "attention %s does not apply the model's attention dropout (%s): it trains another model than SDPA, "
            "and the model's key says so",
            implementation,
            dropout,
        )
    failure = _load_and_probe(load, implementation, precision)
    if not isinstance(failure, Exception):
        return failure, implementation
    if attention != "auto":
        raise failure
    log.warning("attention %s failed (%s: %s); training with SDPA", implementation, type(failure).__name__, failure)
    return load({}), "default"


def _load_and_probe(load, implementation: str, precision: str):
    """The model with ``implementation`` after one forward and backward pass, or the exception it raised (the
    failed model already released, so the fallback never holds two models on the GPU)."""
    import torch

    try:
        model = load({"attn_implementation": implementation})
        _probe(model, precision)
        return model
    except Exception as exc:
        failure = exc
    model = None  # noqa: F841 - the failed model and its traceback's frames go before the fallback loads
    failure.__traceback__ = None
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    return failure


def activation_bytes(model, tokens_per_step: float) -> float:
    """Rough activation memory of one training step: about 34 bytes per token, layer and hidden unit
    in 16-bit precision (Korthikanti et al., 2022, without the attention matrix that SDPA never stores)."""
    config = model[0].auto_model.config
    layers = getattr(config, "num_hidden_layers", 12)
    hidden = getattr(config, "hidden_size", 768)
    return 34.0 * tokens_per_step * layers * hidden


def mini_batch_for(
    requested: int, ranking: bool, model, row_lengths: list[np.ndarray], batch_size: int, free: float | None = None
) -> int:
    """The cached loss's mini batch (0: the plain loss): as asked, or with "auto" (-1) only when a batch of
    ``batch_size`` rows (``row_lengths``: tokens per row of each column) would not fit in ``free`` bytes, by
    default the free memory of this process's own GPU (not GPU 0)."""
    import torch

    if requested >= 0 or not ranking:
        return max(0, requested)
    if not torch.cuda.is_available():
        return 0
    per_row = sum(float(np.percentile(lengths, 99)) for lengths in row_lengths)
    weights = 16.0 * sum(p.numel() for p in model.parameters())  # weights, gradients, two Adam moments
    free = torch.cuda.mem_get_info(torch.device(training_device()))[0] if free is None else free
    needed = activation_bytes(model, per_row * batch_size) + weights
    return 0 if needed < 0.7 * free else CACHED_MINI_BATCH


def measure_chunk_overhead(model, precision: str, length: int = 64, repeats: int = 5) -> int:
    """What one more forward pass costs, in padded tokens' worth of work, measured on this model and device:
    the time of a forward and backward pass over 1 and over 16 texts of ``length`` tokens, fitted as
    fixed cost + cost per token (median of ``repeats``). It decides how many length-grouped chunks a batch
    is cut into (``batches.plan_chunks``)."""
    import time

    import torch

    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(mixed_precision(precision))
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
            with torch.autocast(model.device.type, dtype=dtype or torch.float32, enabled=dtype is not None):
                model(dict(features))["sentence_embedding"].float().sum().backward()
            if model.device.type == "cuda":
                torch.cuda.synchronize(model.device)
            times.append(time.perf_counter() - started)
        model.zero_grad(set_to_none=True)
        return float(np.median(times[1:]))

    one, many = timed(1), timed(16)
    per_token = max((many - one) / (15 * length), 1e-12)
    return int(np.clip((one - per_token * length) / per_token, 0, 8192))
