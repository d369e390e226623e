"""The attention kernel a model trains with, and the model loaded with it.

``auto`` takes a flash kernel only where it is installed, the GPU runs it, training runs in half
precision and the kernel applies the model's attention dropout, so that auto never trains another
model than SDPA would. A chosen kernel must pass one forward and backward pass before the trainer
starts; one chosen by ``auto`` that fails falls back to SDPA. The CPU trains with SDPA.
"""

from __future__ import annotations

import inspect
import logging

from tasks.models.precision import Precision
from tasks.training.devices import training_device

log = logging.getLogger(__name__)

ATTENTION = ("auto", "sdpa", "eager", "flash_attention_2", "flash_attention_3", "flash_attention_4")
FLASH = ("flash_attention_2", "flash_attention_3", "flash_attention_4")


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


def attention_implementation(requested: str, precision: Precision, attention_dropout: float = 0.1) -> str | None:
    """The attention kernel to load the model with. Asked for by name: that one. ``auto``: a flash kernel
    where one is installed and the GPU runs it, only in half precision (``precision``, what training runs
    as: flash kernels take no fp32), and only one that applies the model's attention dropout; else the
    model's default (SDPA)."""
    import torch

    if requested != "auto":
        return requested
    if not torch.cuda.is_available() or precision is Precision.FP32:
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


def _probe(model, precision: Precision) -> None:
    """One forward and backward pass of two short texts in the training precision: a kernel that fails to
    compile or run fails here, before the trainer starts, not at step 1."""
    features = model.preprocess(["a probe", "a longer probe text"])
    features = {k: v.to(model.device) if hasattr(v, "to") else v for k, v in features.items()}
    model.train()
    with precision.autocast(model.device.type):
        model(features)["sentence_embedding"].float().sum().backward()
    model.zero_grad(set_to_none=True)


def load_for_training(model_location: str, attention: str, precision: Precision):
    """The SentenceTransformer to train and the attention kernel it runs (``precision``: what training runs
    as, ``runs_as``). In fp32 whatever dtype its checkpoint was saved in (mixed precision needs fp32 master
    weights). A flash kernel chosen by ``auto`` that fails to load, or fails a forward and backward pass,
    falls back to SDPA with a warning naming the cause; one asked for by name that does not apply the
    model's attention dropout is used with a warning."""
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


def _load_and_probe(load, implementation: str, precision: Precision):
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
