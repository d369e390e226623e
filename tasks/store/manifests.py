"""Manifests: the one reader of ``manifest.json``, and a strict one.

A folder is an artifact only when its manifest says what it holds: a JSON object naming its stage and key
(its folder's), its parents, and a non-empty mapping of every file it holds (relative path → bytes, sha256).
Anything else (not JSON, a list, ``{}``, no files, a file without its size or checksum, a path out of the
folder) certifies nothing, so it is not an artifact: ``find`` rebuilds the folder, ``verify`` reports the
manifest, inspect leaves it out, each naming the folder. Every stage writes at least one file, so a manifest
listing none is never a real artifact's.
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path, PurePosixPath
from typing import Any

import pyarrow.parquet as pq

MANIFEST = "manifest.json"
SHA256 = re.compile(r"[0-9a-f]{64}")


class ManifestError(ValueError):
    """A manifest that is missing or not an artifact's; the message names the file and what is wrong."""


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _bad_file(rel: Any, info: Any) -> bool:
    """Whether a ``files`` entry fails to name a file inside the folder with its size and checksum."""
    if not isinstance(rel, str) or not isinstance(info, dict):
        return True
    path = PurePosixPath(rel)
    outside = path.is_absolute() or any(part in ("", "..") for part in path.parts) or rel == MANIFEST
    size = info.get("bytes")
    sized = isinstance(size, int) and not isinstance(size, bool) and size >= 0
    checksum = info.get("sha256")
    return outside or not rel or not sized or not (isinstance(checksum, str) and SHA256.fullmatch(checksum))


def _bad_parent(parent: Any) -> bool:
    return not isinstance(parent, dict) or not all(isinstance(parent.get(k), str) for k in ("stage", "key"))


def problem(manifest: Any, folder: Path) -> str | None:
    """What keeps ``manifest`` from being the manifest of the artifact in ``folder``; None when nothing does."""
    if not isinstance(manifest, dict):
        return f"not a JSON object but {type(manifest).__name__}"
    if (manifest.get("stage"), manifest.get("key")) != (folder.parent.name, folder.name):
        return f"it names {manifest.get('stage')!r}/{manifest.get('key')!r}, not its folder"
    files = manifest.get("files")
    if not isinstance(files, dict) or not files:
        return "it lists no file"
    bad = sorted(str(rel) for rel, info in files.items() if _bad_file(rel, info))
    if bad:
        return f"its entries for {bad[:3]} lack a relative path, a size or a sha256"
    parents = manifest.get("parents")
    if not isinstance(parents, list) or any(_bad_parent(p) for p in parents):
        return "its parents are not a list of stage/key entries"
    rows = manifest.get("rows")
    if rows is not None and (not isinstance(rows, int) or isinstance(rows, bool)):
        return f"its rows are {rows!r}"
    return None


def load_manifest(folder: Path) -> dict[str, Any]:
    """The manifest of the artifact in ``folder``; ManifestError when it is missing or not an artifact's."""
    path = folder / MANIFEST
    try:
        manifest = json.loads(path.read_text())
    except FileNotFoundError:
        raise ManifestError(f"{path}: missing") from None
    except (OSError, ValueError) as exc:  # unreadable, not UTF-8, not JSON
        raise ManifestError(f"{path}: unreadable ({type(exc).__name__}: {exc})") from None
    why = problem(manifest, folder)
    if why is not None:
        raise ManifestError(f"{path}: {why}")
    return manifest


def read_manifest(folder: Path) -> dict[str, Any] | None:
    """The manifest, or None when ``folder`` holds no artifact (for callers that only read facts from it)."""
    try:
        return load_manifest(folder)
    except ManifestError:
        return None


def _matches(path: Path, info: dict[str, Any]) -> bool:
    """Whether ``path`` has the listed size and sha256; a file gone meanwhile or a malformed entry does not."""
    try:
        return path.stat().st_size == info["bytes"] and file_sha256(path) == info["sha256"]
    except (OSError, KeyError, TypeError):
        return False


def damaged_files(folder: Path, files: dict[str, dict[str, Any]]) -> list[str]:
    """Those of ``files`` (relative path → bytes, sha256) that are missing or differ in size or checksum."""
    return [rel for rel, info in files.items() if not _matches(folder / rel, info)]


def file_entries(folder: Path) -> dict[str, dict[str, Any]]:
    """Every file under ``folder`` (a model folder's too, however deep) with its size and checksum."""
    return {
        str(p.relative_to(folder)): {"bytes": p.stat().st_size, "sha256": file_sha256(p)}
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def schema_of(folder: Path) -> dict[str, dict[str, str]]:
    return {
        str(p.relative_to(folder)): {f.name: str(f.type) for f in pq.read_schema(p)}
        for p in sorted(folder.rglob("*.parquet"))
    }
