"""gc on a URL store, from one listing of its ``artifacts/`` (``cleanup.py``: a local folder, and this mirror).

Kept, with all it reaches (parents, the models manifests name): the champions, the last ``keep_runs`` run records
and those younger than ``min_age_hours``, run leases and build locks renewed within max(3 ttl, 10 min) on the
store's clock, and their miners' embedding stores. Removed: older unreferenced artifacts (manifest first, then
files), a killed run's uploads, stale locks and leases; a run naming an artifact meanwhile gets it back.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import email.utils
import json
import logging
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tasks.store import conditional, leases, remote
from tasks.store.champion import read_champion, slots
from tasks.store.cleanup import NOT_STAGES, store_fingerprint
from tasks.store.manifests import MANIFEST, problem
from tasks.store.object_locks import lease_ttl
from tasks.store.runs import RUNS, RunRecord

log = logging.getLogger(__name__)

WINDOW_FLOOR_SECONDS = 600.0  # a holder renews every ttl/3: three missed renewals, and never under 10 min
LIVE = f"{RUNS}/live/"
LEASE = re.compile(rf"{LIVE}[^/]+{re.escape(leases.SUFFIX)}")  # a run lease, under runs/live/
LOCK = re.compile(r"([^/]+)/\.partial-([^/]+)\.lock")  # a build lock, beside its key's folder
RECORD = re.compile(rf"{RUNS}/[^/]+\.json")  # a run record


@dataclass(frozen=True)
class Survey:
    """One listing of a store's ``artifacts/`` (paths relative to it), its manifests read, and the store's time."""

    store: remote.Store
    objects: dict[str, dict[str, Any]]  # path -> listing entry (size, LastModified, ETag)
    manifests: dict[str, tuple[bytes, dict[str, Any] | None]]  # stage/key -> bytes, manifest (None: not one)
    now: dt.datetime

    def age(self, rel: str) -> float:  # seconds since the object was last written, on the store's clock
        return (self.now - self.objects[rel]["LastModified"]).total_seconds()

    def manifest(self, name: str) -> dict[str, Any]:
        return self.manifests.get(name, (b"", None))[1] or {}

    def doomed(self, kind: str, name: str, rels: list[str], etag: str | None = None) -> Doomed:
        size = sum(self.objects[rel]["size"] for rel in rels)
        return Doomed(kind, name, f"{self.store.url}/artifacts/{name}", tuple(rels), etag, size)


@dataclass(frozen=True)
class Doomed:
    """What gc removes: ``objects`` (first the one whose going commits it) under ``name`` in ``artifacts/``."""

    kind: str  # artifact, upload, lock, lease, embeddings
    name: str
    url: str
    objects: tuple[str, ...]
    etag: str | None  # of the first object: it goes only while unchanged
    size: int


def _path(store: remote.Store, rel: str) -> str:
    return f"{store.root}/artifacts/{rel}"


def store_now(store: remote.Store) -> dt.datetime:
    """The store's clock: the Date header of one answer (ages are never measured across two clocks)."""
    try:
        date = store.fs.call_s3("head_bucket", Bucket=store.bucket)["ResponseMetadata"]["HTTPHeaders"].get("date")
    except Exception as exc:  # noqa: BLE001
        raise remote.failed(store, "reading its clock", exc) from exc
    return email.utils.parsedate_to_datetime(date) if date else dt.datetime.now(dt.UTC)


def listing(store: remote.Store, under: str = "") -> dict[str, dict[str, Any]]:
    """Every object under ``artifacts/<under>``, by its path relative to ``artifacts/``."""
    base = _path(store, "")
    try:
        found = store.fs.find(f"{base}{under}".rstrip("/"), detail=True)
    except Exception as exc:  # noqa: BLE001
        raise remote.failed(store, f"listing {base}{under}", exc) from exc
    return {n.removeprefix(base): i for n, i in found.items() if i.get("type") != "directory" and n.startswith(base)}


def read_objects(store: remote.Store, rels: Iterable[str]) -> dict[str, bytes]:
    """The bytes of these objects, in one batch; one removed meanwhile is left out."""
    rels = sorted(rels)
    paths = [_path(store, rel) for rel in rels]
    try:
        got = store.fs.cat(paths, on_error="return") if paths else {}
    except Exception as exc:  # noqa: BLE001
        raise remote.failed(store, f"reading {len(paths)} objects under {_path(store, '')}", exc) from exc
    for path in paths:
        if not isinstance(got.get(path), bytes | FileNotFoundError | None):
            raise remote.failed(store, f"reading {path}", got[path])
    return {rel: got[path] for rel, path in zip(rels, paths) if isinstance(got.get(path), bytes)}


def artifact_files(objects: dict[str, dict[str, Any]], top: str | None = None) -> dict[str, dict[str, dict]]:
    """Objects by artifact key (``top``: by folder of that one): stage/key -> path within the key -> entry."""
    by_key: dict[str, dict[str, dict[str, Any]]] = {}
    for rel, info in objects.items():
        parts = rel.split("/", 2)
        if len(parts) == 3 and (parts[0] == top if top else parts[0] not in NOT_STAGES and parts[1][:1] != "."):
            by_key.setdefault(f"{parts[0]}/{parts[1]}", {})[parts[2]] = info
    return by_key


def manifests_in(store: remote.Store, objects: dict[str, dict[str, Any]]) -> dict[str, tuple[bytes, dict | None]]:
    """Every manifest among ``objects``: stage/key -> its bytes and the manifest (None: not an artifact's)."""
    read, names = {}, [f"{n}/{MANIFEST}" for n, files in artifact_files(objects).items() if MANIFEST in files]
    for rel, body in read_objects(store, names).items():
        name, manifest = rel.removesuffix(f"/{MANIFEST}"), _json(body)
        why = "unreadable (not JSON)" if manifest is None else problem(manifest, Path(name))
        if why is not None:
            log.warning("%s/%s is not an artifact (%s); the next run rebuilds it", name, MANIFEST, why)
        read[name] = (body, manifest if why is None else None)
    return read


def survey(store: remote.Store, now: dt.datetime | None = None) -> Survey:
    objects = listing(store)
    return Survey(store, objects, manifests_in(store, objects), now or store_now(store))


def window(ttl: float) -> float:  # how long after its last renewal a lease or lock still counts as held
    return max(3 * ttl, WINDOW_FLOOR_SECONDS)


def _json(body: bytes) -> Any:  # None when not JSON
    with contextlib.suppress(ValueError):
        return json.loads(body)


def live_leases(store: remote.Store, objects: dict[str, dict[str, Any]], now: dt.datetime) -> list[dict[str, Any]]:
    """The artifact lines of every run lease renewed within its window (by the ttl its last beat names)."""
    live = []
    for rel, body in read_objects(store, [r for r in objects if LEASE.fullmatch(r)]).items():
        lines = [item for line in body.splitlines() if isinstance(item := _json(line), dict)]
        ttls = [h["ttl"] for i in lines if isinstance(h := i.get("holder"), dict) and isinstance(h.get("ttl"), float)]
        if (now - objects[rel]["LastModified"]).total_seconds() < window(ttls[-1] if ttls else lease_ttl()):
            live += [item for item in lines if "holder" not in item]
    return live


def build_locks(s: Survey) -> dict[str, tuple[str, dict[str, Any], bool]]:
    """Every build lock: its path -> the stage/key it builds, its holder's facts, whether renewed in its window."""
    names = {rel: f"{m[1]}/{m[2]}" for rel in s.objects if (m := LOCK.fullmatch(rel)) and m[1] not in NOT_STAGES}
    locks = {}
    for rel, body in read_objects(s.store, names).items():
        facts = _json(body) if isinstance(_json(body), dict) else {}
        ttl = facts.get("ttl") if isinstance(facts.get("ttl"), int | float) and facts["ttl"] > 0 else lease_ttl()
        locks[rel] = (names[rel], facts, s.age(rel) < window(ttl))
    return locks


def _key_of(store: remote.Store, location: str) -> str | None:
    """stage/key of the artifact a model location lies in: its store URL, or a path in a mirror of the store."""
    where = rf"^{re.escape(f'{store.scheme}://{store.root}')}|/stores/[^/]+"  # any machine's mirror of it
    found = re.search(rf"(?:{where})/artifacts/([^/]+)/([^/]+)", location)
    return f"{found[1]}/{found[2]}" if found and found[1] not in NOT_STAGES else None


def _named(store: remote.Store, items: Iterable[dict[str, Any]]) -> list[str]:
    """What lease lines (or lock holders) name: each artifact, its parents, the models it reads."""
    keys = []
    for item in items:
        refs = [item, *(p for p in item.get("parents") or [] if isinstance(p, dict))]
        keys += [f"{r['stage']}/{r['key']}" for r in refs if isinstance(r.get("stage"), str) and r.get("key")]
        keys += [k for loc in item.get("models") or [] if isinstance(loc, str) and (k := _key_of(store, loc))]
    return keys


def reachable(s: Survey, start: Iterable[str]) -> set[str]:
    """``start`` and everything the store's manifests lead to: parents, and the models they name."""
    todo, kept = list(start), set()
    while todo:
        name = todo.pop()
        if name not in kept:
            kept.add(name)
            manifest = s.manifest(name)
            todo += _named(s.store, [{"parents": manifest.get("parents"), "models": leases.model_locations(manifest)}])
    return kept


def _recorded(s: Survey, keep_runs: int, min_age_hours: float) -> list[str]:
    """What the last ``keep_runs`` run records used, and every record younger than ``min_age_hours``."""
    records = sorted(rel for rel in s.objects if RECORD.fullmatch(rel))
    chosen = set(records[-keep_runs:] if keep_runs > 0 else [])
    chosen |= {rel for rel in records if s.age(rel) < min_age_hours * 3600}
    keys = []
    for rel, body in read_objects(s.store, chosen).items():
        try:
            refs = RunRecord.from_dict(json.loads(body)).artifacts.named().values()
        except (TypeError, KeyError, AttributeError, ValueError) as exc:  # keeps nothing, stops nothing
            log.warning("run record %s/artifacts/%s cannot be read (%s); it keeps no artifacts", s.store.url, rel, exc)
            continue
        keys += [f"{ref.stage}/{ref.key}" for ref in refs]
    return keys


def protected(s: Survey, keep_runs: int, min_age_hours: float) -> tuple[set[str], set[str]]:
    """The stage/keys that stay and the miners whose stores stay; ``ChampionDamaged`` rather than a guess."""
    champions = [f"models/{r['model_key']}" for slot in slots(s.store.url) if (r := read_champion(s.store.url, slot))]
    entries = live_leases(s.store, s.objects, s.now)
    live = [(key, facts) for key, facts, renewed in build_locks(s).values() if renewed]
    start = [*champions, *_recorded(s, keep_runs, min_age_hours), *_named(s.store, entries)]
    start += [key for key, _ in live] + _named(s.store, [{"parents": facts.get("parents")} for _, facts in live])
    keys = reachable(s, start)
    params = [s.manifest(k).get("params") for k in keys] + [facts.get("params") for _, facts in live]
    params += [{"miner": item.get("miner")} for item in entries]
    miners = {p["miner"] for p in params if isinstance(p, dict) and isinstance(p.get("miner"), str)}
    return keys, miners


def stale(s: Survey, kept: tuple[set[str], set[str]], min_age_hours: float) -> list[Doomed]:
    """What gc removes from the store, given what stays (``protected``)."""
    keys, miners = kept
    min_age, orphan_age = min_age_hours * 3600, max(min_age_hours * 3600, window(lease_ttl()))
    doomed = []
    for name, files in sorted(artifact_files(s.objects).items()):
        rels = [f"{name}/{rel}" for rel in sorted(files) if rel != MANIFEST]
        if name in keys:
            continue
        if MANIFEST in files and s.age(f"{name}/{MANIFEST}") >= min_age:
            doomed.append(s.doomed("artifact", name, [f"{name}/{MANIFEST}", *rels], files[MANIFEST].get("ETag")))
        elif MANIFEST not in files and min(s.age(rel) for rel in rels) >= orphan_age:  # a killed upload
            doomed.append(s.doomed("upload", name, rels))
    locks = sorted(rel for rel, (_, _, renewed) in build_locks(s).items() if not renewed)
    leased = sorted(rel for rel in s.objects if LEASE.fullmatch(rel) and s.age(rel) >= window(lease_ttl()))
    doomed += [s.doomed("lock", rel, [rel], s.objects[rel].get("ETag")) for rel in locks]
    doomed += [s.doomed("lease", rel, [rel], s.objects[rel].get("ETag")) for rel in leased]
    for name, files in sorted(artifact_files(s.objects, "embeddings").items()):
        rels, store = [f"{name}/{rel}" for rel in sorted(files)], name.split("/")[1]
        unused = store.startswith(".trash-") or store_fingerprint(store) not in miners
        if unused and min(s.age(rel) for rel in rels) >= min_age:
            doomed.append(s.doomed("embeddings", name, rels))
    return doomed


def unreferenced(data_dir: str, keep_runs: int = 5, min_age_hours: float = 24.0,
                 now: dt.datetime | None = None) -> list[Doomed]:  # fmt: skip
    """What gc on the URL store ``data_dir`` would remove (ages on the store's clock, unless ``now`` is given)."""
    s = survey(remote.parse(data_dir), now)
    return stale(s, protected(s, keep_runs, min_age_hours), min_age_hours)


def _delete(store: remote.Store, rels: Iterable[str]) -> None:
    keys = [store.object_key(_path(store, rel)) for rel in rels]
    for start in range(0, len(keys), 1000):
        batch = {"Objects": [{"Key": key} for key in keys[start : start + 1000]], "Quiet": True}
        try:
            errors = store.fs.call_s3("delete_objects", Bucket=store.bucket, Delete=batch).get("Errors") or []
        except Exception as exc:  # noqa: BLE001
            raise remote.failed(store, f"deleting {len(batch['Objects'])} objects", exc) from exc
        if errors:
            raise remote.StoreError(f"the store {store.url}: could not delete {errors[:3]}")


def remove(data_dir: str, doomed: list[Doomed], keep_runs: int = 5, min_age_hours: float = 24.0,
           now: dt.datetime | None = None) -> int:  # fmt: skip
    """Delete what ``unreferenced`` listed that the store, looked at again, still holds unreferenced and
    unchanged; returns the bytes freed. Manifests go first, and the leases are read once more before files go."""
    s = survey(remote.parse(data_dir), now)
    fresh = {d.name: d for d in stale(s, protected(s, keep_runs, min_age_hours), min_age_hours)}
    todo = [fresh[d.name] for d in doomed if d.name in fresh and fresh[d.name].etag == d.etag]
    freed, committed = 0, []
    for d in (d for d in todo if d.kind in ("artifact", "lock", "lease")):
        try:  # one that fails stays; the leases are read again below whatever happened
            gone = conditional.delete_if(s.store, _path(s.store, d.objects[0]), d.etag or "")
        except remote.StoreError:
            gone = False
        if not gone:
            log.info("kept %s: it changed since gc looked, or could not be deleted", d.url)
        elif d.kind == "artifact":
            committed.append(d)
        else:
            freed += d.size
    again = live_leases(s.store, listing(s.store, LIVE), s.now)  # a run that named one since gc looked keeps it
    back = reachable(s, _named(s.store, again))
    miners = {miner for item in again if isinstance(miner := item.get("miner"), str)}
    for d in committed + [d for d in todo if d.kind in ("upload", "embeddings")]:
        if d.name in back or (d.kind == "embeddings" and store_fingerprint(d.name.split("/")[1]) in miners):
            log.info("kept %s: a run named it since gc looked", d.url)
            if d.kind == "artifact":  # its manifest back; published again meanwhile, theirs stands
                with contextlib.suppress(remote.Conflict):
                    conditional.put_if(s.store, _path(s.store, d.objects[0]), s.manifests[d.name][0], None)
            continue
        _delete(s.store, d.objects[1:] if d.kind == "artifact" else d.objects)
        freed += d.size
    return freed
