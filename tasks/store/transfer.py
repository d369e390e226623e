"""Transfers between a URL store and its mirror: artifacts (manifest last up, every file checked down) and
the small files beside them (run records, push records, embedding shards).

Publishing uploads every file an artifact's manifest lists, then the manifest: the commit point, so files
without one (a killed upload) are not an artifact. Pulling brings an artifact into the mirror only when
every file matches its manifest's size and sha256; a damaged one in the store is built again, and its
upload replaces it. Each function is a no-op for a path outside any store's mirror (a plain data folder).
A pull is staged, and a replaced copy trashed, in the mirror's ``artifacts/.staging/`` (``locks.py``), which
is never uploaded: the store holds finished artifacts only.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import threading
import uuid
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from tasks.store.locks import STAGING, staging_dir
from tasks.store.manifests import MANIFEST, damaged_files, problem
from tasks.store.remote import Store, failed, store_for, unreachable

log = logging.getLogger(__name__)


def has_artifact(folder: Path, sizes: bool = True) -> bool:
    """Whether the store holds the artifact mirrored at ``folder``: its manifest (the commit point) and, with
    ``sizes``, every file the mirror's manifest lists, at its size (one listing)."""
    store = store_for(folder)
    if store is None:
        return True
    remote_folder = store.remote(folder)
    try:
        listed = store.fs.find(remote_folder, detail=True)
    except FileNotFoundError:
        return False
    except Exception as exc:  # noqa: BLE001
        raise failed(store, f"looking for {remote_folder}", exc) from exc
    present = {name.removeprefix(f"{remote_folder}/"): info.get("size") for name, info in listed.items()}
    if MANIFEST not in present:
        return False
    if not sizes:
        return True
    files = json.loads((folder / MANIFEST).read_text())["files"]
    return all(present.get(rel) == info["bytes"] for rel, info in files.items())


def pull_artifact(folder: Path) -> bool:
    """Bring the artifact at ``folder`` from the store into the mirror, every file checked against its manifest.
    False when the store has none, or a damaged one (the caller builds it again, and its upload replaces it)."""
    store = store_for(folder)
    if store is None:
        return False
    remote = store.remote(folder)
    fs = store.fs
    try:
        text = fs.cat_file(f"{remote}/{MANIFEST}")
    except FileNotFoundError:
        return False
    except Exception as exc:  # noqa: BLE001
        raise failed(store, f"reading {remote}/{MANIFEST}", exc) from exc
    try:
        manifest = json.loads(text)
    except ValueError as exc:
        log.warning("%s/%s is not an artifact's manifest (%s): building it again", remote, MANIFEST, exc)
        return False
    why = problem(manifest, folder)
    if why is not None:
        log.warning("%s/%s: %s: building it again", remote, MANIFEST, why)
        return False
    tmp = staging_dir(folder) / f".tmp-{folder.name}-{uuid.uuid4().hex[:8]}"  # a staging name: gc knows it
    files = sorted(manifest["files"])
    try:
        tmp.mkdir(parents=True)
        folder.parent.mkdir(exist_ok=True)  # renamed into from .staging/: the stage's folder must be there
        for rel in files:
            (tmp / rel).parent.mkdir(parents=True, exist_ok=True)
        try:
            fs.get([f"{remote}/{rel}" for rel in files], [str(tmp / rel) for rel in files])
        except FileNotFoundError:
            log.warning("%s: a file its manifest lists is missing from the store: building it again", remote)
            return False
        except Exception as exc:  # noqa: BLE001
            raise failed(store, f"downloading {remote}", exc) from exc
        damaged = damaged_files(tmp, manifest["files"])
        if damaged:
            log.warning("%s: %s differ from the manifest in the store: building it again", remote, damaged[:3])
            return False
        (tmp / MANIFEST).write_bytes(text)
        _swap_in(tmp, folder, manifest["files"])
        return True
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _swap_in(tmp: Path, folder: Path, files: dict[str, dict]) -> None:
    """Rename a pulled folder into place. A sound copy there already (another process of this machine pulled
    it meanwhile, and may be reading it) stays; a damaged one is moved aside first."""
    if folder.exists():
        if (folder / MANIFEST).is_file() and not damaged_files(folder, files):
            return
        trash = staging_dir(folder) / f".trash-{folder.name}-{uuid.uuid4().hex[:8]}"  # tmp's folder: it exists
        with contextlib.suppress(FileNotFoundError):
            os.rename(folder, trash)
        shutil.rmtree(trash, ignore_errors=True)
    with contextlib.suppress(OSError):  # a concurrent pull renamed its copy in between: keep theirs
        os.rename(tmp, folder)


def share(folder: Path, lease: Any, wait_seconds: float) -> bool:
    """Upload a build to a URL store under its build lease. A lease lost (or unrenewed for 2/3 of a ttl) meanwhile
    is taken again first, and the copy its taker published, if any, is adopted instead (True): never two
    builds' files under one manifest."""
    if lease is not None and not lease.healthy():
        what = f"the build of {folder.parent.name}/{folder.name}"
        log.warning("%s: its lease went unrenewed; taking it again before publishing", what)
        lease.reacquire(wait_seconds, what)
        if adopt(folder):
            return True
    push_artifact(folder)
    return False


def adopt(folder: Path) -> bool:
    """Replace the mirror's copy of an artifact by the store's, if the store has a sound one (True)."""
    if not has_artifact(folder, sizes=False):
        return False
    aside = staging_dir(folder) / f".trash-{folder.name}-{uuid.uuid4().hex[:8]}"
    aside.parent.mkdir(parents=True, exist_ok=True)
    os.rename(folder, aside)
    if pull_artifact(folder):
        shutil.rmtree(aside, ignore_errors=True)
        return True
    os.rename(aside, folder)  # the store's copy is damaged: ours goes up in its place
    return False


def push_artifact(folder: Path) -> None:
    """Upload a finished local artifact: every file its manifest lists, then the manifest, last."""
    store = store_for(folder)
    if store is None:
        return
    _never_staging(store, folder)
    manifest = json.loads((folder / MANIFEST).read_text())
    files = sorted(manifest["files"])
    remote = store.remote(folder)
    try:  # lists on both sides: file to file, never a folder nested into an existing prefix
        store.fs.put([str(folder / rel) for rel in files], [f"{remote}/{rel}" for rel in files])
        store.fs.put_file(str(folder / MANIFEST), f"{remote}/{MANIFEST}")
    except Exception as exc:  # noqa: BLE001
        raise failed(store, f"uploading {remote} (nothing is published there until its manifest is)", exc) from exc
    log.info("uploaded %s (%d files)", remote, len(files) + 1)


def _never_staging(store: Store, path: Path) -> None:
    """Refuse to upload what lies in ``artifacts/.staging/``: half-built folders, pulls, trash are never the store's."""
    if Path(path).resolve().relative_to(store.mirror).parts[1:2] == (STAGING,):
        raise ValueError(f"{path}: a staging path (under {STAGING}/) is never uploaded to the store")


# ---- small files: run records, push records, embedding shards ------------------------------------------------------


def push_files(paths: Iterable[Path]) -> None:
    """Upload mirror files, in the order given (a checksum before the file it certifies)."""
    for path in paths:
        store = store_for(path)
        if store is None:
            continue
        _never_staging(store, path)
        try:
            store.fs.put_file(str(path), store.remote(path))
        except Exception as exc:  # noqa: BLE001
            raise failed(store, f"uploading {store.remote(path)}", exc) from exc


def pull_folder(folder: Path, pattern: str = "*", mutable: bool = False) -> list[Path]:
    """Download the files of a store folder matching ``pattern`` that the mirror lacks (or holds at another
    size; every one when ``mutable``: records rewritten in place, often at the same size); returns what was
    downloaded. Nothing for a plain data folder."""
    store = store_for(folder)
    if store is None:
        return []
    remote = store.remote(folder)
    try:
        listed = store.fs.glob(f"{remote}/{pattern}", detail=True)
    except FileNotFoundError:
        return []
    except Exception as exc:  # noqa: BLE001
        raise failed(store, f"listing {remote}", exc) from exc
    wanted = []
    for name, info in sorted(listed.items()):
        if info.get("type") == "directory":
            continue
        local = folder / name.rsplit("/", 1)[-1]
        if mutable or not (local.is_file() and local.stat().st_size == info.get("size")):
            wanted.append((name, local))
    folder.mkdir(parents=True, exist_ok=True)
    fetched = []
    for name, local in wanted:
        tmp = local.with_name(f".tmp-{local.name}-{uuid.uuid4().hex[:8]}")
        try:
            store.fs.get_file(name, str(tmp))
            os.replace(tmp, local)
            fetched.append(local)
        except FileNotFoundError:  # removed between the listing and the download
            continue
        except Exception as exc:  # noqa: BLE001
            raise failed(store, f"downloading {name}", exc) from exc
        finally:
            tmp.unlink(missing_ok=True)
    return fetched


def delete_file(path: Path) -> None:
    store = store_for(path)
    if store is not None and not unreachable(store):
        with contextlib.suppress(FileNotFoundError):
            store.fs.rm_file(store.remote(path))


def keep_uploaded(stop: threading.Event, path: Path, every: float, guard: threading.Lock) -> None:
    """Upload a run lease again every ``every`` seconds until ``stop``: it shows its run lives. Each beat changes its
    bytes (a last holder line with the beat's number and the ttl), so its ETag moves with it; under ``guard``, so a
    beat never lands over a newer upload of the lease's lines."""
    store, beat = store_for(path), 0
    while store is not None and not stop.wait(every):
        beat += 1
        try:
            with guard:
                if stop.is_set():
                    return
                line = json.dumps({"holder": {"beat": beat, "ttl": every * 3}}) + "\n"
                store.fs.pipe_file(store.remote(path), path.read_bytes() + line.encode())
        except Exception as exc:  # noqa: BLE001 -- the store is away; the next beat tries again
            log.warning("could not renew the run lease %s in the store (%s)", path, exc)
