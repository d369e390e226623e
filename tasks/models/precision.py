"""The numeric precision a step runs in, resolved once from what was asked into a typed value.

A recipe or an evaluation asks for "fp32", "fp16" or "bf16"; what runs depends on the machine (the
CPU computes in fp32; a GPU without bf16 in fp16). ``runs_as`` decides that, for training and for
encoding alike, and every step reads the resulting :class:`Precision` for its torch dtype, its
Trainer flags and its autocast, instead of working it out from the string again.

torch is imported only when a dtype or an autocast is asked for, so that modules which only name a
precision (settings, the CLI) do not load it.
"""

from __future__ import annotations

import contextlib
from enum import StrEnum
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch


class Precision(StrEnum):
    """A precision by the name recipes and evaluation records use ("fp32", "bf16", "fp16")."""

    FP32 = "fp32"
    BF16 = "bf16"
    FP16 = "fp16"

    @classmethod
    def parse(cls, value: str, parameter: str) -> Precision:
        """The precision named ``value``, or a ValueError naming the flow's ``parameter``."""
        try:
            return cls(value)
        except ValueError:
            names = tuple(p.value for p in cls)
            raise ValueError(f"parameter {parameter}: {value!r} is not one of {names}") from None

    @property
    def dtype(self) -> torch.dtype | None:
        """The half dtype weights are cast to or autocast computes in; None for fp32 (nothing to cast)."""
        import torch

        return {Precision.BF16: torch.bfloat16, Precision.FP16: torch.float16}.get(self)

    @property
    def mixed_precision(self) -> str:
        """The name accelerate and the training summary give it: "no" (fp32), "fp16" or "bf16". The models
        key records this name, so it must not change."""
        return "no" if self is Precision.FP32 else self.value

    @property
    def trainer_flags(self) -> dict[str, bool]:
        """``fp16`` and ``bf16`` for Hugging Face's TrainingArguments (both False: fp32)."""
        return {"fp16": self is Precision.FP16, "bf16": self is Precision.BF16}

    def autocast(self, device_type: str) -> contextlib.AbstractContextManager:
        """torch's autocast to this precision on ``device_type`` ("cuda", "cpu"); for fp32 it does nothing."""
        import torch

        dtype = self.dtype
        return torch.autocast(device_type, dtype=dtype or torch.float32, enabled=dtype is not None)


def runs_as(requested: str | Precision, device: str | None = None) -> Precision:
    """What ``requested`` really runs as on ``device`` (None: this machine's GPU if it has one).

    The CPU always computes in fp32; a GPU in what is asked, except that bf16 becomes fp16 where the GPU
    does not support it. Training (mixed precision) and encoding (weights cast) both follow this rule.
    """
    import torch

    precision = Precision(requested)
    if precision is Precision.FP32 or (device or "cuda").startswith("cpu") or not torch.cuda.is_available():
        return Precision.FP32
    if precision is Precision.BF16 and torch.cuda.is_bf16_supported():
        return Precision.BF16
    return Precision.FP16
