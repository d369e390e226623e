"""Which device trains: this process's own GPU under torchrun, else the GPU, else the CPU."""

from __future__ import annotations

import os


def device_name() -> str:
    """The device as summaries and logs name it: ``cuda (<GPU name>)`` or ``cpu``."""
    import torch

    return f"cuda ({torch.cuda.get_device_name(0)})" if torch.cuda.is_available() else "cpu"


def training_device() -> str:
    """This process's device: its own GPU under torchrun (LOCAL_RANK), else the GPU, else the CPU."""
    import torch

    if not torch.cuda.is_available():
        return "cpu"
    return f"cuda:{int(os.environ.get('LOCAL_RANK', '0'))}"
