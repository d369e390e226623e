"""Which model a name means and what identifies it: one offline policy for every layer, and one fingerprint
for the bundled MiniLM whether it comes from the package or from the hub (the hub faked here, in its
cache's layout: nothing leaves the machine)."""

from __future__ import annotations

import hashlib
import socket
from fnmatch import fnmatch
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

SHA = "c9" * 20
EARLIER_DOWNLOADS = {"onnx/model.onnx": b"an ONNX export", "pytorch_model.bin": b"the same weights, pickled"}


@pytest.fixture()
def environment_decides(monkeypatch):
    """huggingface_hub's import-time flag off (conftest sets HF_HUB_OFFLINE=1 before it loads), so only the
    variables as they are now decide; a probe of the hub's host answers without touching the network."""
    probes = []

    class Connection:
        def close(self) -> None:
            pass

    def connect(address, timeout=None):
        probes.append(address)
        return Connection()

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
    monkeypatch.setattr(socket, "create_connection", connect)
    return probes


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
    assert hub_reachable() and environment_decides == [(resolve.HUB_HOST, 443)]


def test_the_offline_policy_is_huggingface_hubs(environment_decides, monkeypatch):
    """TRANSFORMERS_OFFLINE counts when HF_HUB_OFFLINE is unset, and the flag read at import counts alone."""
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "1")
    assert hub_offline() and not hub_reachable()
    monkeypatch.delenv("TRANSFORMERS_OFFLINE")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    assert hub_offline() and not hub_reachable() and environment_decides == []
    assert hub.hub_offline is resolve.hub_offline  # one definition, the datasets' reader uses the models'


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
