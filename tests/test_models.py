"""Which model a name means and what identifies it: one offline policy for every layer, and one fingerprint
for the bundled MiniLM whether it comes from the package or from the hub (the hub faked here, in its
cache's layout: nothing leaves the machine)."""

from __future__ import annotations

import hashlib
import os
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from fnmatch import fnmatch
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from types import SimpleNamespace

import huggingface_hub
import pytest
from huggingface_hub import constants

from tasks.models import resolve
from tasks.models.resolve import (
    BUNDLED_MINILM,
    bundled_minilm_dir,
    folder_fingerprint,
    hub_offline,
    hub_reachable,
    model_files,
    resolve_model,
)
from tasks.pairs import hub
from tests.loopback import serving

SHA = "c9" * 20
EARLIER_DOWNLOADS = {"onnx/model.onnx": b"an ONNX export", "pytorch_model.bin": b"the same weights, pickled"}


@dataclass
class Endpoint:
    """A stand-in of the hub's endpoint on loopback: every request answered ``status``, each recorded as
    (method, request target: a path, or a whole URL when it came through as a proxy's request)."""

    url: str = ""
    status: int = 200
    seen: list[tuple[str, str]] = field(default_factory=list)


@pytest.fixture()
def endpoint():
    state = Endpoint()

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args) -> None:
            pass

        def _answer(self) -> None:
            state.seen.append((self.command, self.path))
            self.send_response(state.status)
            self.send_header("Content-Length", "0")
            self.send_header("Location", state.url + "/elsewhere")  # read only on a 3xx
            self.end_headers()

        do_GET = do_HEAD = _answer

    with serving(Handler) as state.url:
        yield state


def _closed_port() -> int:
    with socket.socket() as probe:  # a port nothing listens on any more
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture()
def environment_decides(monkeypatch, endpoint):
    """huggingface_hub's import-time flag off (conftest sets HF_HUB_OFFLINE=1 before it loads), so only the
    variables as they are now decide; its endpoint (HF_ENDPOINT, read by it at import) the loopback stand-in,
    whose requests are returned."""
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
    monkeypatch.setattr(constants, "ENDPOINT", endpoint.url)
    return endpoint.seen


@pytest.mark.parametrize("value", ["1", "on", "ON", "yes", "Yes", "true", "TRUE"])
def test_every_value_huggingface_hub_reads_as_offline_is_offline_for_every_layer(
    environment_decides, monkeypatch, value
):
    """The reported case: HF_HUB_OFFLINE=on was offline for the datasets and probed the network for models."""
    monkeypatch.setenv("HF_HUB_OFFLINE", value)
    assert constants._is_true(value)  # huggingface_hub itself would refuse requests
    assert hub_offline() and hub.hub_offline()
    assert not hub_reachable() and environment_decides == []  # no probe of the network


@pytest.mark.parametrize("value", ["", "0", "off", "no", "false"])
def test_other_values_are_online_for_every_layer(environment_decides, monkeypatch, value):
    monkeypatch.setenv("HF_HUB_OFFLINE", value)
    assert not hub_offline() and not hub.hub_offline()
    assert hub_reachable() and environment_decides == [("HEAD", "/")]  # the endpoint, one request


def test_the_offline_policy_is_huggingface_hubs(environment_decides, monkeypatch):
    """TRANSFORMERS_OFFLINE counts when HF_HUB_OFFLINE is unset, and the flag read at import counts alone."""
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "1")
    assert hub_offline() and not hub_reachable()
    monkeypatch.delenv("TRANSFORMERS_OFFLINE")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    assert hub_offline() and not hub_reachable() and environment_decides == []
    assert hub.hub_offline is resolve.hub_offline  # one definition, the datasets' reader uses the models'


@pytest.mark.parametrize("status", [200, 302, 401, 404, 503])
def test_any_http_answer_of_the_endpoint_is_reachable(environment_decides, endpoint, monkeypatch, status):
    """A mirror that answers its root with 404, a hub behind a login (401), one in trouble (503): all there."""
    monkeypatch.delenv("HF_HUB_OFFLINE")
    endpoint.status = status
    assert hub_reachable()
    assert environment_decides == [("HEAD", "/")]  # the redirect is not followed: an answer is an answer


def test_an_endpoint_that_does_not_answer_is_unreachable(environment_decides, monkeypatch):
    monkeypatch.delenv("HF_HUB_OFFLINE")
    monkeypatch.setattr(constants, "ENDPOINT", f"http://127.0.0.1:{_closed_port()}")
    assert not hub_reachable()
    with socket.create_server(("127.0.0.1", 0)) as silent:  # accepts connections (the backlog), never answers
        monkeypatch.setattr(constants, "ENDPOINT", f"http://127.0.0.1:{silent.getsockname()[1]}")
        started = time.perf_counter()
        assert not hub_reachable(timeout=0.3)
        assert time.perf_counter() - started < 3  # the probe's own timeout, not the shared client's (none)


_PROBE = "from tasks.models.resolve import hub_reachable; print(hub_reachable())"


def _probe_in_a_fresh_process(**variables: str) -> bool:
    """hub_reachable in a new interpreter whose environment holds ``variables`` from the start, as a user's
    shell would: huggingface_hub reads HF_ENDPOINT at import, httpx the proxy variables when its client is made."""
    env = {k: v for k, v in os.environ.items() if "proxy" not in k.lower() and k != "TRANSFORMERS_OFFLINE"}
    env |= {"HF_HUB_OFFLINE": "0", **variables}
    root = Path(__file__).resolve().parent.parent
    done = subprocess.run([sys.executable, "-c", _PROBE], cwd=root, env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return {"True": True, "False": False}[done.stdout.strip()]


def test_hf_endpoint_and_proxies_are_honoured(endpoint):
    """The reported case: the probe asked huggingface.co:443 whatever HF_ENDPOINT (a mirror, an enterprise hub)
    or HTTPS_PROXY said, so behind a proxy or on a mirror the hub was 'unreachable' and models fell back."""
    assert _probe_in_a_fresh_process(HF_ENDPOINT=endpoint.url + "/")
    assert endpoint.seen == [("HEAD", "/")]
    assert not _probe_in_a_fresh_process(HF_ENDPOINT=f"http://127.0.0.1:{_closed_port()}")
    # a hub only the proxy can reach (the name does not resolve here): the stand-in is the proxy
    assert _probe_in_a_fresh_process(HF_ENDPOINT="http://hub.mirror.invalid", HTTP_PROXY=endpoint.url)
    assert endpoint.seen[-1] == ("HEAD", "http://hub.mirror.invalid/")


# --- the bundled MiniLM: one fingerprint whatever the connectivity ---


def _link(target: Path, link: Path) -> None:
    link.parent.mkdir(parents=True, exist_ok=True)
    link.unlink(missing_ok=True)
    link.symlink_to(target)


@pytest.fixture()
def fake_hub(tmp_path, monkeypatch):
    """The hub reachable, and ``snapshot_download`` answering from a cache in the hub's layout: the bundled
    files as blobs linked from ``snapshots/<sha>/`` (the hub holds the same files), with files of other
    formats already there from an earlier download. Records what each call asked for."""
    storage = tmp_path / "hub" / f"models--{BUNDLED_MINILM.replace('/', '--')}"
    snapshot = storage / "snapshots" / SHA
    hub_files = {f.as_posix(): bundled_minilm_dir() / f for f in model_files(bundled_minilm_dir())}
    for name, content in EARLIER_DOWNLOADS.items():
        (storage / "blobs").mkdir(parents=True, exist_ok=True)
        (storage / "blobs" / name.replace("/", "-")).write_bytes(content)
        _link(storage / "blobs" / name.replace("/", "-"), snapshot / name)
    asked = []

    def snapshot_download(repo_id, *, allow_patterns=None, **kwargs):
        asked.append({"repo_id": repo_id, "allow_patterns": allow_patterns})
        if repo_id != BUNDLED_MINILM:
            no_such = SimpleNamespace(headers={}, request=None)
            raise huggingface_hub.errors.RepositoryNotFoundError(f"{repo_id}: no such model", response=no_such)
        for name, source in hub_files.items():
            if allow_patterns is None or any(fnmatch(name, p) for p in allow_patterns):
                blob = storage / "blobs" / hashlib.sha256(name.encode()).hexdigest()
                _link(source, blob)
                _link(blob, snapshot / name)
        (storage / "refs").mkdir(exist_ok=True)
        (storage / "refs" / "main").write_text(SHA)
        return str(snapshot)

    monkeypatch.setattr(huggingface_hub, "snapshot_download", snapshot_download)
    monkeypatch.setattr(resolve, "hub_reachable", lambda timeout=3.0: True)
    return {"asked": asked, "snapshot": snapshot, "files": hub_files}


@pytest.mark.parametrize("name", [BUNDLED_MINILM, "all-MiniLM-L6-v2"])
def test_the_bundled_minilm_has_one_fingerprint_on_and_off_line(fake_hub, monkeypatch, name):
    """The reported case: online it was ``name@<sha>``, offline a hash of the bundled folder, so a change of
    connectivity retrained everything made from it."""
    with monkeypatch.context() as offline:
        offline.setattr(resolve, "hub_reachable", lambda timeout=3.0: False)
        bundled = resolve_model(name)
    online = resolve_model(name)
    assert (bundled.source, online.source) == ("bundled", "hub")
    assert online.location == str(fake_hub["snapshot"])
    assert online.fingerprint == bundled.fingerprint == folder_fingerprint(bundled_minilm_dir())
    # only the bundled copy's files are fetched, of the hub's repo (the short alias names no repo of its own)
    assert [asked["repo_id"] for asked in fake_hub["asked"]] == [BUNDLED_MINILM]
    assert sorted(fake_hub["asked"][0]["allow_patterns"] or ["everything"]) == sorted(fake_hub["files"])


def test_a_hub_copy_that_differs_from_the_bundled_one_has_its_own_fingerprint(fake_hub, tmp_path):
    retrained = tmp_path / "model.safetensors"
    retrained.write_bytes(b"other weights")
    fake_hub["files"]["model.safetensors"] = retrained
    assert resolve_model(BUNDLED_MINILM).fingerprint != folder_fingerprint(bundled_minilm_dir())
    del fake_hub["files"]["model.safetensors"]  # a commit without the file is not the bundled copy either
    (fake_hub["snapshot"] / "model.safetensors").unlink()
    assert resolve_model(BUNDLED_MINILM).fingerprint != folder_fingerprint(bundled_minilm_dir())


def test_bundled_minilm_is_the_bundled_copy_even_online(fake_hub):
    model = resolve_model("bundled-minilm")
    assert model.source == "bundled" and model.location == str(bundled_minilm_dir())
    assert fake_hub["asked"] == []


def test_other_hub_models_keep_their_commit_as_fingerprint(fake_hub, monkeypatch):
    monkeypatch.setattr(huggingface_hub, "snapshot_download", lambda repo_id, **kwargs: f"/cache/snapshots/{SHA}")
    assert resolve_model("org/model").fingerprint == f"org/model@{SHA}"


def _model_folder(folder: Path, weights: bytes) -> Path:
    (folder / "1_Pooling").mkdir(parents=True)
    (folder / "model.safetensors").write_bytes(weights)
    (folder / "1_Pooling" / "config.json").write_text("{}")
    (folder / "checkpoint-10").mkdir()
    (folder / "checkpoint-10" / "optimizer.pt").write_bytes(weights * 2)
    return folder


def test_a_folder_fingerprint_is_its_contents_not_where_it_lies(tmp_path):
    """A model under a path naming a checkpoint (``…/checkpoint-500``) used to hash no file at all, so every
    such folder had the same fingerprint; training checkpoints inside a model are still left out."""
    one = _model_folder(tmp_path / "run" / "checkpoint-500", b"weights one")
    other = _model_folder(tmp_path / "run" / "checkpoint-600", b"weights two")
    same = _model_folder(tmp_path / "elsewhere", b"weights one")
    assert resolve_model(str(one)).fingerprint != resolve_model(str(other)).fingerprint
    assert folder_fingerprint(one) == folder_fingerprint(same)
    assert [f.as_posix() for f in model_files(one)] == ["1_Pooling/config.json", "model.safetensors"]
    (one / "checkpoint-10" / "optimizer.pt").write_bytes(b"a later step")
    assert folder_fingerprint(one) == folder_fingerprint(same)
