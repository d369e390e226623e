"""A manifest certifies an artifact only when it lists its files: anything else is rebuilt, never trusted."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from tasks.store.artifacts import ArtifactRef, find, list_artifacts, materialize, read_manifest, verify, write_parquet

FRAME = pd.DataFrame({"a": [1, 2, 3]})


def _build(calls: list):
    def build(folder: Path) -> int:
        calls.append(folder)
        return write_parquet(FRAME, folder / "triplets.parquet")

    return build


def _broken(manifest: dict) -> dict[str, str]:
    """Damaged versions of a real manifest, by what is wrong with them."""

    def edited(**changes) -> str:
        return json.dumps({**manifest, **changes})

    entry = manifest["files"]["triplets.parquet"]
    return {
        "empty object": "{}",
        "a list": "[]",
        "not JSON": '{"stage": "triplets", "key"',
        "no files": json.dumps({k: v for k, v in manifest.items() if k != "files"}),
        "files empty": edited(files={}),
        "files a list": edited(files=["triplets.parquet"]),
        "no checksum": edited(files={"triplets.parquet": {"bytes": entry["bytes"]}}),
        "size a string": edited(files={"triplets.parquet": {**entry, "bytes": str(entry["bytes"])}}),
        "path out of the folder": edited(files={"../triplets.parquet": entry}),
        "another key": edited(key="0" * 16),
        "parents not a list": edited(parents={"stage": "pairs"}),
    }


DAMAGES = ["empty object", "a list", "not JSON", "no files", "files empty", "files a list", "no checksum",
           "size a string", "path out of the folder", "another key", "parents not a list"]  # fmt: skip


@pytest.mark.parametrize("damage", DAMAGES)
def test_a_manifest_that_does_not_list_its_files_is_not_an_artifact(tmp_path, caplog, damage):
    calls: list = []
    ref = materialize(tmp_path, "triplets", 1, {"p": 1}, [], _build(calls))
    manifest_path = ref.folder / "manifest.json"
    manifest_path.write_text(_broken(json.loads(manifest_path.read_text()))[damage])
    (ref.folder / "triplets.parquet").unlink()  # what a manifest of {} used to serve as cached
    assert read_manifest(ref.folder) is None
    assert verify(ref) == ["manifest.json"]  # never "intact"
    with caplog.at_level("WARNING"):
        assert find(tmp_path, "triplets", ref.key) is None
        [row] = list_artifacts(tmp_path)  # inspect lists it, and its check names the manifest
    assert str(ref.folder) in caplog.text and "not an artifact" in caplog.text
    assert (row["stage"], row["key"], row["path"]) == ("triplets", ref.key, ref.path)
    assert verify(ArtifactRef(row["stage"], row["key"], row["path"])) == ["manifest.json"]

    with caplog.at_level("WARNING"):
        again = materialize(tmp_path, "triplets", 1, {"p": 1}, [], _build(calls))  # no AttributeError
    assert not again.cached and len(calls) == 2 and again.path == ref.path
    assert pd.read_parquet(again.folder / "triplets.parquet").equals(FRAME)
    assert verify(again) == [] and read_manifest(again.folder)["files"].keys() == {"triplets.parquet"}
    assert sorted(p.name for p in ref.folder.parent.iterdir()) == [ref.key]  # the damaged copy went
    assert materialize(tmp_path, "triplets", 1, {"p": 1}, [], _build(calls)).cached


def test_a_folder_without_its_manifest_is_rebuilt_with_a_warning(tmp_path, caplog):
    calls: list = []
    ref = materialize(tmp_path, "pairs", 1, {}, [], _build(calls))
    (ref.folder / "manifest.json").unlink()
    with caplog.at_level("WARNING"):
        assert not materialize(tmp_path, "pairs", 1, {}, [], _build(calls)).cached
    assert str(ref.folder) in caplog.text and len(calls) == 2


def test_a_build_that_writes_no_file_is_refused_and_leaves_nothing(tmp_path):
    with pytest.raises(ValueError, match="wrote no file"):
        materialize(tmp_path, "reports", 1, {}, [], lambda folder: None)
    assert list((tmp_path / "artifacts" / "reports").iterdir()) == []


def test_a_model_folder_manifest_lists_every_file_however_deep(tmp_path):
    def build(folder: Path) -> None:
        (folder / "model" / "1_Pooling").mkdir(parents=True)
        (folder / "model" / "1_Pooling" / "config.json").write_text("{}")
        (folder / "model" / "model.safetensors").write_bytes(b"w" * 10)
        (folder / "training.json").write_text("{}")

    ref = materialize(tmp_path, "models", 1, {}, [], build)
    listed = set(read_manifest(ref.folder)["files"])
    assert listed == {"model/1_Pooling/config.json", "model/model.safetensors", "training.json"}
    (ref.folder / "model" / "1_Pooling" / "config.json").unlink()
    assert verify(ref) == ["model/1_Pooling/config.json"] and find(tmp_path, "models", ref.key) is None
