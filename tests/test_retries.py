"""Retries of the network-bound tasks (hub download, hub push): only a failed network is tried again.

The errors are real ones: huggingface_hub talking to the stand-in hub of test_publish (a 403, a 500) or to
a closed loopback port, and the pipeline's own error paths around them. Bad input fails at once."""

from __future__ import annotations

import socket
import types

import huggingface_hub.constants
import huggingface_hub.utils._http
import pytest
from prefect import flow
from prefect.states import Failed
from prefect.testing.utilities import prefect_test_harness

from tasks import stages
from tasks.models import network
from tasks.pairs import hub as hub_sources
from tasks.pairs import sources
from tasks.pairs.tables import DataError
from tasks.shipping.publish import PublishError, push_folder
from tasks.store.remote import StoreError
from tests import test_publish
from tests.test_publish import TOKEN, make_model_folder

hub, online = test_publish.hub, test_publish.online  # its stand-in hub and online mode, as fixtures here


@pytest.fixture()
def hub_online(online, monkeypatch):
    """Online as the pipeline's own check reads it too (conftest sets HF_HUB_OFFLINE=1 for the session)."""
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)


@pytest.fixture()
def closed_port() -> str:
    """A loopback URL nothing listens on: connections are refused."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}"


def _push_error(folder, endpoint: str, repo: str = "org/name") -> PublishError:
    with pytest.raises(PublishError) as caught:
        push_folder(folder, repo, token=TOKEN, endpoint=endpoint, reachable=lambda: True)
    return caught.value


def test_a_push_that_cannot_connect_is_retried(online, tmp_path, closed_port):
    error = _push_error(make_model_folder(tmp_path), closed_port)
    assert "ConnectError" in str(error) and error.__cause__ is None  # only the text says what failed
    assert network.is_network_failure(error)


def test_a_push_the_hub_fails_with_a_500_is_retried(hub, online, tmp_path, monkeypatch):
    monkeypatch.setattr(huggingface_hub.utils._http, "time", types.SimpleNamespace(sleep=lambda seconds: None))
    hub.fail_commit.add("org/name")
    assert network.is_network_failure(_push_error(make_model_folder(tmp_path), hub.base))


def test_a_push_the_hub_refuses_is_not_retried(hub, online, tmp_path):
    hub.refuse_create.add("org/name")
    error = _push_error(make_model_folder(tmp_path), hub.base)
    assert "403" in str(error)
    assert not network.is_network_failure(error)


def test_bad_push_input_is_not_retried(online, tmp_path, closed_port):
    folder = make_model_folder(tmp_path)
    for repo in ("org/na me", "org--x/name"):
        assert not network.is_network_failure(_push_error(folder, closed_port, repo))
    with pytest.raises(PublishError) as caught:
        push_folder(folder, "org/name", token="", endpoint=closed_port, reachable=lambda: True)
    assert not network.is_network_failure(caught.value)


def test_a_hub_source_that_cannot_connect_is_retried(hub_online, monkeypatch, closed_port):
    monkeypatch.setattr(huggingface_hub.constants, "ENDPOINT", closed_port)
    spec = hub_sources.parse_hub_source("my-org/pairs@main")
    with pytest.raises(DataError, match="hub unreachable") as caught:  # not cached: a DataError, a ValueError
        hub_sources.resolve_revision(spec)
    assert isinstance(caught.value, ValueError)
    assert network.is_network_failure(caught.value)  # it was raised while handling the refused connection


def test_a_hub_source_the_hub_does_not_have_is_not_retried(hub, hub_online, monkeypatch):
    monkeypatch.setattr(huggingface_hub.constants, "ENDPOINT", hub.base)  # the stand-in: 404 for datasets
    with pytest.raises(DataError) as caught:
        hub_sources.resolve_revision(hub_sources.parse_hub_source("my-org/pairs@main"))
    assert not network.is_network_failure(caught.value)


def test_offline_a_hub_source_is_not_retried():
    with pytest.raises(DataError, match="offline") as caught:  # conftest: HF_HUB_OFFLINE=1
        hub_sources.resolve_revision(hub_sources.parse_hub_source("my-org/pairs@main"))
    assert not network.is_network_failure(caught.value)


@pytest.mark.parametrize(
    "error, retried",
    [
        (ConnectionResetError("reset by peer"), True),
        (huggingface_hub.errors.OfflineModeIsEnabled("offline"), False),  # a ConnectionError, but offline stays
        (StoreError("the store s3://b/p: upload failed (ConnectionError: ...)"), False),  # the store retried
        (ValueError("parameter max_pairs: -1"), False),
        (TimeoutError("gave up after 86400 s waiting for another run building the same artifact"), False),
        (FileNotFoundError("data/pairs.parquet"), False),
    ],
)
def test_what_is_a_network_failure(error, retried):
    assert network.is_network_failure(error) is retried


def test_a_data_error_made_from_a_connection_error_is_retried():
    try:
        try:
            raise ConnectionRefusedError(111, "Connection refused")
        except ConnectionRefusedError as exc:
            raise DataError("my-org/pairs@abc: cannot fetch the data files") from exc
    except DataError as exc:
        assert network.is_network_failure(exc)


def test_the_retry_condition_reads_the_failed_state():
    assert network.retry_on_network_failure(None, None, Failed(data=ConnectionResetError()))
    assert not network.retry_on_network_failure(None, None, Failed(data=DataError("row 3: label 7")))


def test_the_hub_tasks_retry_with_backoff_on_the_network_only():
    for task in (stages.load_pairs, stages.push):
        assert task.retries == 3
        assert task.retry_delay_seconds == [10, 20, 40]
        assert task.retry_condition_fn is network.retry_on_network_failure
    assert stages.map_labels.retries == 0  # a local stage fails at once


@pytest.fixture()
def prefect_api():
    with prefect_test_harness(server_startup_timeout=120):
        yield


def test_load_pairs_retries_a_network_failure_and_not_bad_input(prefect_api, monkeypatch, nli_file, tmp_path):
    calls = []
    real = sources.load_source

    def flaky(source, max_pairs):
        calls.append(source)
        if len(calls) == 1:
            raise ConnectionResetError("reset by peer")  # the first download fails
        return real(source, max_pairs)

    def bad(source, max_pairs):
        calls.append(source)
        raise DataError(f"{source}: row 3: label 7 is not 0, 1 or 2")

    quick = stages.load_pairs.with_options(retry_delay_seconds=0)

    @flow
    def load(data_dir: str):
        ref = quick(str(nli_file), 50, data_dir)
        monkeypatch.setattr(sources, "load_source", bad)
        state = quick(str(nli_file), 40, data_dir, return_state=True)
        return ref, state

    monkeypatch.setattr(sources, "load_source", flaky)
    ref, state = load(str(tmp_path / "data"))
    assert ref.rows == 50 and len(calls) == 3  # failed once, then built; bad input tried once
    assert state.is_failed()
    with pytest.raises(DataError, match="label 7"):
        state.result()
