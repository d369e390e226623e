"""The lock and pyproject.toml agree: every pin in pyproject.toml is in requirements.lock at the same
version, every locked package carries hashes, and torch (installed per platform) is not in it."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _name(raw: str) -> str:
    return re.sub(r"[-_.]+", "-", raw).lower()


def _locked() -> dict[str, tuple[str, int]]:
    """name -> (version, number of hashes) from requirements.lock."""
    text = (ROOT / "requirements.lock").read_text()
    entries = {}
    for block in re.split(r"\n(?=[A-Za-z0-9])", text):
        match = re.match(r"([A-Za-z0-9_.\-]+)==([^\s;\\]+)", block)
        if match:
            entries[_name(match[1])] = (match[2], block.count("--hash=sha256:"))
    return entries


def test_every_pin_in_pyproject_is_locked_at_the_same_version():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    pins = [*project["dependencies"], *project["optional-dependencies"]["dev"]]
    locked = _locked()
    assert len(locked) > 100  # the whole transitive set, not only the direct pins
    for pin in pins:
        match = re.match(r"([A-Za-z0-9_.\-]+)(?:\[[^\]]*\])?\s*==\s*([^\s;]+)", pin)
        if match is None or _name(match[1]) == "torch":
            continue
        name, version = _name(match[1]), match[2]
        assert name in locked, f"{name} is pinned in pyproject.toml but missing from requirements.lock: run make lock"
        assert locked[name][0] == version, f"{name}: pyproject.toml {version}, requirements.lock {locked[name][0]}"


def test_every_locked_package_has_hashes_and_torch_is_left_to_the_platform():
    locked = _locked()
    assert all(hashes >= 1 for _, hashes in locked.values()), [n for n, (_, h) in locked.items() if h == 0]
    assert "torch" not in locked
    assert not [name for name in locked if name.startswith("nvidia-")]  # CUDA libraries come with CUDA torch
