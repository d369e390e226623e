"""The environment an artifact was made in: library versions, device and the project's commit.

Written into every manifest, so a model can be traced to "torch X on an H100 at commit Y". Library
upgrades do not enter the artifact keys (a patch release of pyarrow would otherwise throw the whole
store away), but a reused artifact whose result-deciding libraries differ from the running ones is
logged with the difference, so a scheduled retrain never reuses across them unnoticed.
"""

from __future__ import annotations

import copy
import functools
import logging
import platform
import subprocess
from importlib import metadata
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)
REPO_ROOT = Path(__file__).resolve().parents[2]  # the checkout: tasks/store/environment.py is two folders down

# What is recorded. The first group decides results: tokenisation, the model's numerics, the
# optimizer and trainer, the data pipeline's sampling, nearest-neighbour search, the scores.
RESULT_LIBRARIES = (
    "torch",
    "transformers",
    "tokenizers",
    "sentence-transformers",
    "datasets",
    "faiss",
    "mteb",
    "numpy",
)
OTHER_LIBRARIES = ("prefect", "pyarrow", "accelerate", "pandas", "onnxruntime", "openvino", "nncf", "model2vec")
DISTRIBUTIONS = {"faiss": ("faiss-cpu", "faiss-gpu", "faiss-gpu-cu12")}


def _version(name: str) -> str | None:
    for distribution in DISTRIBUTIONS.get(name, (name,)):
        try:
            return metadata.version(distribution)
        except metadata.PackageNotFoundError:
            continue
    return None


def versions(names: tuple[str, ...]) -> dict[str, str | None]:
    """Installed versions of these libraries (None: not installed)."""
    return {name: _version(name) for name in names}


@functools.lru_cache(maxsize=1)
def _git() -> dict[str, Any]:
    """The checkout's commit and whether tracked files differ from it; None outside a git checkout."""
    try:
        commit = subprocess.run(
            ["git", "-C", str(REPO_ROOT), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10, check=True
        ).stdout.strip()
        status = subprocess.run(
            ["git", "-C", str(REPO_ROOT), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return {"commit": None, "dirty": None}
    return {"commit": commit, "dirty": bool(status.strip())}


def _device() -> dict[str, Any]:
    import torch

    cuda = torch.cuda.is_available()
    return {"name": torch.cuda.get_device_name(0) if cuda else "cpu", "cuda": torch.version.cuda}


def describe() -> dict[str, Any]:
    """The environment block of a manifest; identical for two runs on the same machine and commit."""
    return copy.deepcopy(_describe())


@functools.lru_cache(maxsize=1)
def _describe() -> dict[str, Any]:  # once per process: versions and device do not change under it
    return {
        "python": platform.python_version(),
        "libraries": {name: _version(name) for name in (*RESULT_LIBRARIES, *OTHER_LIBRARIES)},
        "device": _device(),
        "git": _git(),
    }


def differences(recorded: dict[str, Any] | None, current: dict[str, Any] | None = None) -> dict[str, tuple]:
    """Result-deciding libraries whose versions differ: name -> (recorded, running)."""
    if not recorded:
        return {}
    current = current or describe()
    was, now = recorded.get("libraries", {}), current["libraries"]
    return {name: (was.get(name), now.get(name)) for name in RESULT_LIBRARIES if was.get(name) != now.get(name)}
