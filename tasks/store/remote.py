"""The store on object storage: ``data_dir`` as an fsspec URL (``s3://bucket/prefix``), mirrored in a local cache.

Every stage keeps reading and writing local files: for a URL they lie in the store's mirror under
``TRAIN_EMBEDDINGS_CACHE`` (default ``~/.cache/train-embeddings``), which is only a copy and safe to delete.
The store holds the same layout as a local data folder (``artifacts/<stage>/<key>/...``), so DuckDB, polars
and pandas read its Parquet where it lies.

An artifact is published by uploading every file, then its manifest last: the manifest is the commit point,
so files without one (a killed upload) are not an artifact, and gc removes them after its keep window. It is
pulled into the mirror when a run asks for it, every file checked against the manifest's size and sha256.
Credentials come from where botocore looks (AWS variables, profile, instance role; ``AWS_ENDPOINT_URL`` for
an S3-compatible store); none is ever written: the URL names the store, and a URL with credentials in it is
refused. Transfers are retried with backoff by botocore (standard mode) and s3fs; artifacts are immutable
and content-addressed, so a retried upload writes the same bytes.

A plain path needs none of this: nothing here is imported on its way, and fsspec's filesystems are imported
only for a URL.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import os
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

log = logging.getLogger(__name__)

CACHE_ENV = "TRAIN_EMBEDDINGS_CACHE"
FILESYSTEMS = {"s3": ("s3fs", "s3"), "gs": ("gcsfs", "gcs"), "gcs": ("gcsfs", "gcs"), "az": ("adlfs", "azure"),
               "abfs": ("adlfs", "azure")}  # fmt: skip
CONDITIONAL = ("s3",)  # the schemes whose conditional writes the locks and the champion use


class StoreError(RuntimeError):
    """The object store failed or refused; the message names the store and what was being done."""


class Conflict(StoreError):
    """A conditional write lost: the object changed (or appeared) since it was read."""


@dataclass(frozen=True)
class Store:
    """A store URL and the local folder mirroring it."""

    url: str  # scheme://bucket/prefix, no trailing slash
    scheme: str
    bucket: str
    prefix: str
    mirror: Path

    @property
    def root(self) -> str:
        """The store's path as fsspec names it (no scheme)."""
        return f"{self.bucket}/{self.prefix}".rstrip("/")

    def remote(self, local: Path) -> str:
        """Where a file or folder of the mirror lies in the store."""
        rel = Path(local).resolve().relative_to(self.mirror)
        return self.root if str(rel) == "." else f"{self.root}/{rel.as_posix()}"

    def object_key(self, path: str) -> str:
        """The object key, within the bucket, of a path as fsspec names it (``bucket/key``)."""
        return path.removeprefix(f"{self.bucket}/")

    @property
    def fs(self) -> Any:
        """For transfers: patient (retries with backoff, long reads)."""
        return _filesystem(self.scheme, False, *_identity())

    @property
    def quick_fs(self) -> Any:
        """For leases: an answer (or a failure) well within a lease's ttl/3, never minutes of retries."""
        return _filesystem(self.scheme, True, *_identity())


def _identity() -> tuple[str | None, ...]:
    """What picks the server and the identity: the filesystem cache's key (in memory only; the secret hashed)."""
    secret = hashlib.sha256(os.environ.get("AWS_SECRET_ACCESS_KEY", "").encode()).hexdigest()
    return (secret, *(os.environ.get(name) for name in _FS_ENV))


def is_url(data_dir: str | Path) -> bool:
    return isinstance(data_dir, str) and "://" in data_dir


def cache_folder() -> Path:
    return Path(os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "train-embeddings").expanduser().resolve()


def parse(url: str) -> Store:
    """The store a URL names; ValueError naming the parameter when it is not one."""
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    shown = f"{scheme}://{parts.netloc.rpartition('@')[2]}{parts.path}"  # never a credential, nor a query, in a message
    if parts.username or parts.password or "@" in parts.netloc:
        raise ValueError(f"parameter data_dir: {shown}: credentials do not go in the URL; set them in the "
                         "environment (AWS_ACCESS_KEY_ID, a profile, an instance role)")  # fmt: skip
    if parts.query or parts.fragment:
        raise ValueError(f"parameter data_dir: {shown}: a store URL takes no query or fragment ('?...', '#...')")
    if scheme not in FILESYSTEMS:
        raise ValueError(f"parameter data_dir: {shown}: the scheme {scheme!r} is not one of {sorted(FILESYSTEMS)} "
                         "(or give a local folder)")  # fmt: skip
    bucket, prefix = parts.netloc, parts.path.strip("/")
    if not bucket:
        raise ValueError(f"parameter data_dir: {shown} names no bucket (expected {scheme}://bucket/prefix)")
    if any(part in ("", ".", "..") for part in prefix.split("/")) and prefix:
        raise ValueError(f"parameter data_dir: {shown}: empty, '.' or '..' parts in its path")
    normal = f"{scheme}://{bucket}/{prefix}".rstrip("/")
    endpoint = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL") or ""
    digest = hashlib.sha256(f"{normal} {endpoint}".encode()).hexdigest()[:10]
    name = "-".join(p for p in (scheme, bucket, *prefix.split("/")) if p)[:80]
    mirror = cache_folder() / "stores" / f"{name}-{digest}"
    store = Store(normal, scheme, bucket, prefix, mirror)
    _known[mirror] = store
    return store


_known: dict[Path, Store] = {}


def store_of(data_dir: str | Path) -> Store | None:
    """The store ``data_dir`` names, None for a local folder."""
    return parse(data_dir) if is_url(data_dir) else None


def local_root(data_dir: str | Path) -> Path:
    """The local folder the stages read and write: the data folder itself, or the store's mirror."""
    store = store_of(data_dir)
    return Path(data_dir) if store is None else store.mirror


def store_for(path: Path) -> Store | None:
    """The store a local path of a mirror belongs to (None: a plain data folder)."""
    if not _known:
        return None
    path = Path(path).resolve()
    return next((s for mirror, s in _known.items() if path == mirror or mirror in path.parents), None)


def public_path(local: Path) -> str:
    """How a record names a file: its store URL when it lies in a store's mirror (the same on every machine),
    else its local path."""
    store = store_for(local)
    return str(local) if store is None else f"{store.scheme}://{store.remote(local)}"


def normalise(data_dir: str | Path) -> str:
    """A URL in its normal form, a local folder as an absolute path: what runs record and pass to tasks."""
    store = store_of(data_dir)
    return store.url if store is not None else str(Path(data_dir).resolve())


_FS_ENV = ("AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL", "AWS_ACCESS_KEY_ID", "AWS_PROFILE")  # what picks the server


@functools.cache
def _filesystem(scheme: str, quick: bool, *env: str | None) -> Any:
    """One filesystem per scheme and environment (``env``: the variables that pick the server and the identity,
    kept in memory only), with botocore's standard retries (backoff with jitter) for S3."""
    import fsspec

    package, extra = FILESYSTEMS[scheme]
    try:
        cls = fsspec.get_filesystem_class(scheme)
    except (ImportError, ValueError):
        raise StoreError(f"a {scheme}:// store needs {package}: pip install 'train-embeddings[{extra}]'") from None
    if scheme == "s3":
        config = {"retries": {"max_attempts": 3, "mode": "standard"}, "connect_timeout": 10, "read_timeout": 120}
        if quick:
            config = {"retries": {"max_attempts": 2, "mode": "standard"}, "connect_timeout": 3, "read_timeout": 5}
        fs = cls(use_listings_cache=False, config_kwargs=config, skip_instance_cache=True)
        fs.retries = 1 if quick else fs.retries  # s3fs's own retry loop, on top of botocore's
        return fs
    return cls(use_listings_cache=False, skip_instance_cache=True)


_unreachable: dict[str, float] = {}  # store URL -> when it last could not be connected to


def failed(store: Store, doing: str, exc: BaseException) -> StoreError:
    if "connect" in type(exc).__name__.lower() or "connect" in str(exc).lower():
        _unreachable[store.url] = time.monotonic()
    return StoreError(f"the store {store.url}: {doing} failed ({type(exc).__name__}: {exc})")


def unreachable(store: Store, within: float = 60.0) -> bool:
    """Whether the store refused a connection in the last ``within`` seconds: tidying up (deleting a lease that
    runs out by itself) is then skipped rather than retried, so the error that matters comes at once."""
    return time.monotonic() - _unreachable.get(store.url, -1e9) < within


def error_code(exc: BaseException) -> str | None:
    """The S3 error code behind an s3fs exception (``PreconditionFailed``, ``NoSuchKey``, ...), if any."""
    for err in (exc, exc.__cause__, exc.__context__):
        response = getattr(err, "response", None)
        if isinstance(response, dict):
            return str(
                response.get("Error", {}).get("Code") or response.get("ResponseMetadata", {}).get("HTTPStatusCode")
            )
    return None


# ---- checks before any stage runs ----------------------------------------------------------------------------------


def check(data_dir: str, write: bool = True) -> None:
    """For a URL: the filesystem is installed, the credentials work, the bucket exists and (``write``: for a run,
    gc) takes a conditional write. Raises ValueError naming ``data_dir`` and what is wrong, before anything
    expensive runs. Read-only commands (inspect, showing the champion) pass ``write=False``."""
    store = store_of(data_dir)
    if store is None:
        return
    try:
        fs = store.fs
    except StoreError as exc:
        raise ValueError(f"parameter data_dir: {exc}") from None
    if store.scheme not in CONDITIONAL:
        raise ValueError(f"parameter data_dir: {store.url}: the locks need conditional writes, implemented for "
                         f"{CONDITIONAL} stores only")  # fmt: skip
    probe = f"{store.root}/locks/.probe-{uuid.uuid4().hex[:12]}"
    ignored = False
    try:
        fs.call_s3("head_bucket", Bucket=store.bucket)
        if write:
            from tasks.store.conditional import accepts, put_if  # they build on this module

            etag = put_if(store, probe, b"probe", None)
            ignored = accepts(store, probe, b"again", None) or accepts(store, probe, b"again", '"0"')
            fs.call_s3("delete_object", Bucket=store.bucket, Key=store.object_key(probe), IfMatch=etag)
    except Exception as exc:  # noqa: BLE001 (every way it fails is reported the same, with its cause)
        raise ValueError(f"parameter data_dir: the store {store.url} cannot be used: {_why(exc)}") from None
    if write and ignored:
        raise ValueError(f"parameter data_dir: the store {store.url} ignores conditional writes (If-None-Match, "
                         "If-Match): two machines could build one artifact, or overwrite each other's "
                         "champion")  # fmt: skip


def _why(exc: BaseException) -> str:
    code = error_code(exc)
    name = type(exc.__cause__ or exc).__name__
    if name == "NoCredentialsError" or "credentials" in str(exc).lower():
        return (
            "no credentials found (set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, AWS_PROFILE, or an instance role)"
        )
    if code in ("404", "NoSuchBucket") or isinstance(exc, FileNotFoundError):
        return "the bucket does not exist (create it first)"
    if code in ("403", "AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch"):
        return f"access denied ({code}): check the credentials and the bucket's policy"
    return f"{name}: {exc}"
