"""The environment a manifest records is read from the checkout the code runs from."""

from __future__ import annotations

import subprocess
from pathlib import Path

from tasks.pairs import tables
from tasks.store import environment


def test_repo_root_is_the_checkout():
    """It used to be tasks/ (two folders up from tasks/store/environment.py, not three)."""
    root = Path(__file__).resolve().parent.parent
    assert environment.REPO_ROOT == root and (environment.REPO_ROOT / "pyproject.toml").is_file()
    assert tables.REPO_ROOT is environment.REPO_ROOT  # one definition; the samples lie under it
    assert tables.SAMPLES == root / "data" / "samples"


def test_the_recorded_commit_is_the_checkouts():
    command = ["git", "-C", str(environment.REPO_ROOT), "rev-parse", "HEAD"]
    head = subprocess.run(command, capture_output=True, text=True)
    if head.returncode != 0:  # not a git checkout (an unpacked release): nothing to compare
        assert environment.describe()["git"] == {"commit": None, "dirty": None}
        return
    assert environment.describe()["git"]["commit"] == head.stdout.strip()
