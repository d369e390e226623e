"""The S3 server the store's tests run against (tests/object_store.py) does what the store relies on.

Everything goes through s3fs, as the store's code does: ``S3FileSystem()`` with no arguments, configured by the
AWS_* variables the fixtures set.
"""

from __future__ import annotations

import time

import pytest
import s3fs
from botocore.exceptions import ClientError

from tests.object_store import ACCESS_KEY, SECRET_KEY, point_env_at


def bucket_of(url: str) -> str:
    return url.removeprefix("s3://").split("/", 1)[0]


def refused(call, code: str = "PreconditionFailed") -> ClientError:
    """``call`` fails the way s3fs reports a refused conditional request: OSError caused by a ClientError."""
    with pytest.raises(OSError) as caught:
        call()
    cause = caught.value.__cause__
    assert isinstance(cause, ClientError), repr(caught.value)
    assert cause.response["Error"]["Code"] == code, cause.response
    return cause


def test_create_only_put_fails_when_the_key_exists(store_url):
    fs, bucket = s3fs.S3FileSystem(), bucket_of(store_url)
    key = "store/lock"
    fs.call_s3("put_object", Bucket=bucket, Key=key, Body=b"first", IfNoneMatch="*")
    error = refused(lambda: fs.call_s3("put_object", Bucket=bucket, Key=key, Body=b"second", IfNoneMatch="*"))
    assert error.response["ResponseMetadata"]["HTTPStatusCode"] == 412
    assert fs.cat(f"{bucket}/{key}") == b"first"


def test_if_match_put_and_delete_fail_on_a_stale_etag(store_url):
    fs, bucket = s3fs.S3FileSystem(), bucket_of(store_url)
    key = "store/lease"
    first = fs.call_s3("put_object", Bucket=bucket, Key=key, Body=b"v1")["ETag"]
    second = fs.call_s3("put_object", Bucket=bucket, Key=key, Body=b"v2", IfMatch=first)["ETag"]
    assert second != first
    refused(lambda: fs.call_s3("put_object", Bucket=bucket, Key=key, Body=b"v3", IfMatch=first))
    refused(lambda: fs.call_s3("delete_object", Bucket=bucket, Key=key, IfMatch=first))
    assert fs.cat(f"{bucket}/{key}") == b"v2"
    # SeaweedFS answers 412 for If-Match on a missing key too (AWS S3 answers 404 NoSuchKey): treat both as lost.
    refused(lambda: fs.call_s3("put_object", Bucket=bucket, Key="store/none", Body=b"x", IfMatch=second))
    refused(lambda: fs.call_s3("delete_object", Bucket=bucket, Key="store/none", IfMatch=second))
    fs.call_s3("delete_object", Bucket=bucket, Key=key, IfMatch=second)
    assert not fs.exists(f"{bucket}/{key}")


def test_missing_buckets_are_missing(store_url, object_store):
    fs = s3fs.S3FileSystem()
    with pytest.raises(FileNotFoundError):
        fs.call_s3("head_bucket", Bucket="no-such-bucket")
    # -s3.autoCreateBucket=false: without it weed would create the bucket on this put and answer 200.
    refused(lambda: fs.call_s3("put_object", Bucket="no-such-bucket", Key="k", Body=b"x"), code="NoSuchBucket")
    with pytest.raises(FileNotFoundError):
        fs.call_s3("head_bucket", Bucket="no-such-bucket")
    with pytest.raises(ClientError, match="InvalidBucketName"):
        object_store.make_bucket("ab")  # 3 to 63 characters


def test_listens_on_loopback_only_and_keeps_the_keys_out_of_its_log(object_store):
    expected = set(object_store.ports.values())
    deadline = time.monotonic() + 10  # the admin server comes up ~0.5 s after S3 answers
    while {port for _, port in object_store.listening()} != expected and time.monotonic() < deadline:
        time.sleep(0.1)
    found = object_store.listening()
    assert {port for _, port in found} == expected, found
    assert {address for address, _ in found} == {"127.0.0.1"}, found
    psutil = pytest.importorskip("psutil")
    seen = {
        (c.laddr.ip, c.laddr.port) for c in psutil.Process(object_store.pid).net_connections() if c.status == "LISTEN"
    }
    assert seen == set(found)
    log = object_store.log_path.read_text(errors="replace")
    assert SECRET_KEY not in log and ACCESS_KEY not in log


def test_stop_and_kill_then_start_bring_the_same_data_back(private_object_store, object_store, monkeypatch, tmp_path):
    server = private_object_store
    assert server.endpoint != object_store.endpoint and server.running() and object_store.running()  # two at once
    point_env_at(server, monkeypatch, tmp_path)
    bucket = server.make_bucket()
    fs = s3fs.S3FileSystem(skip_instance_cache=True)
    fs.pipe(f"{bucket}/store/a", b"alpha")
    endpoint, ports = server.endpoint, dict(server.ports)

    server.stop()
    assert not server.running()
    with pytest.raises(Exception):  # noqa: B017 - connection refused, whatever botocore calls it
        server.client(connect_timeout=1).list_buckets()
    server.start()
    assert (server.endpoint, server.ports) == (endpoint, ports)
    fs = s3fs.S3FileSystem(skip_instance_cache=True)
    assert fs.cat(f"{bucket}/store/a") == b"alpha"

    fs.pipe(f"{bucket}/store/b", b"beta")
    server.kill()
    server.start()
    fs = s3fs.S3FileSystem(skip_instance_cache=True)
    assert fs.cat(f"{bucket}/store/a") == b"alpha" and fs.cat(f"{bucket}/store/b") == b"beta"
