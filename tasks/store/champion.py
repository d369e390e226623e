"""The champion's record: ``artifacts/champion/<slot>.json``, the best model so far in a data folder.

Only reading it lives here, under everything (gc keeps what it names, the report shows it, the flow
mines with it); deciding who becomes champion is ``tasks/promotion.py``.
"""

from __future__ import annotations

import json
from pathlib import Path

from tasks.store.artifacts import artifacts_root


def champion_file(data_dir: str | Path, slot: str) -> Path:
    return artifacts_root(data_dir) / "champion" / f"{slot}.json"


def read_champion(data_dir: str | Path, slot: str = "champion") -> dict | None:
    try:
        return json.loads(champion_file(data_dir, slot).read_text())
    except (OSError, ValueError):
        return None
