"""Conditional writes on an S3 store: the champion's compare-and-swap and the lease objects under the locks.

``If-None-Match: *`` creates only what is absent, ``If-Match`` writes or deletes only what still has the
ETag read. SeaweedFS answers a missing key's ``If-Match`` with 412, AWS with 404: both are a lost race here.
"""

from __future__ import annotations

from typing import Any

from tasks.store.remote import Conflict, Store, error_code, failed, unreachable


def _precondition(exc: BaseException) -> bool:
    return error_code(exc) in ("PreconditionFailed", "412", "ConditionalRequestConflict", "409")


def accepts(store: Store, path: str, body: bytes, etag: str | None) -> bool:
    """Whether a conditional write that must fail (the object exists; a wrong ETag) was taken all the same."""
    try:
        put_if(store, path, body, etag, readback=False)
    except Conflict:
        return False
    return True


def read_tagged(store: Store, path: str, fs: Any = None) -> tuple[bytes, str] | None:
    """An object's bytes and the ETag of those bytes (one request), None when it is absent."""
    from fsspec.asyn import sync

    fs, key = fs or store.fs, store.object_key(path)

    async def get() -> tuple[bytes, str]:
        response = await fs._call_s3("get_object", Bucket=store.bucket, Key=key)
        try:
            return await response["Body"].read(), response["ETag"]
        finally:
            response["Body"].close()

    try:
        return sync(fs.loop, get)
    except FileNotFoundError:
        return None
    except Exception as exc:  # noqa: BLE001
        if error_code(exc) in ("NoSuchKey", "404"):
            return None
        raise failed(store, f"reading {path}", exc) from exc


def put_if(store: Store, path: str, body: bytes, etag: str | None, fs: Any = None, readback: bool = True) -> str:
    """Write ``path`` only if it still has ``etag`` (None: only if it is absent); returns the new ETag, raises
    ``Conflict`` when another writer got there first. A refusal of a write that had landed (its answer lost,
    the request retried) is no conflict: the object holding exactly ``body`` says so (``readback``)."""
    fs = fs or store.fs
    condition = {"IfNoneMatch": "*"} if etag is None else {"IfMatch": etag}
    key = store.object_key(path)
    try:
        return fs.call_s3("put_object", Bucket=store.bucket, Key=key, Body=body, **condition)["ETag"]
    except Exception as exc:  # noqa: BLE001
        lost = _precondition(exc) or (etag is not None and error_code(exc) in ("NoSuchKey", "404"))  # AWS: 404
        if not lost:
            raise failed(store, f"writing {path}", exc) from exc
    current = read_tagged(store, path, fs) if readback else None
    if current is not None and current[0] == body:
        return current[1]
    raise Conflict(f"the store {store.url}: {path} changed since it was read")


def delete_if(store: Store, path: str, etag: str, fs: Any = None) -> bool:
    """Delete ``path`` only if it still has ``etag``; False when it changed or is gone (or the store is away)."""
    if unreachable(store):
        return False
    key = store.object_key(path)
    try:
        (fs or store.fs).call_s3("delete_object", Bucket=store.bucket, Key=key, IfMatch=etag)
        return True
    except FileNotFoundError:
        return False
    except Exception as exc:  # noqa: BLE001
        if _precondition(exc) or error_code(exc) in ("NoSuchKey", "404"):
            return False
        raise failed(store, f"deleting {path}", exc) from exc
