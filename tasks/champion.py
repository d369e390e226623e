"""The champion: the best model trained so far in a data folder, by one metric.

Scheduled retraining promotes a new model only when it beats the champion; both models
stay in the artifact store, and the pointer file records the decision's history.
"""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

from tasks.artifacts import ArtifactRef, artifacts_root, atomic_write_text


def champion_file(data_dir: str | Path, slot: str) -> Path:
    return artifacts_root(data_dir) / "champion" / f"{slot}.json"


def read_champion(data_dir: str | Path, slot: str = "champion") -> dict | None:
    try:
        return json.loads(champion_file(data_dir, slot).read_text())
    except (OSError, ValueError):
        return None


def decide(champion: dict | None, model_key: str, score: float) -> tuple[bool, str]:
    """Promote when there is no champion, or the candidate scores strictly higher."""
    if champion is None:
        return True, "promoted: no champion yet"
    if champion["model_key"] == model_key:
        return False, "kept: this model is already the champion"
    if score > champion["score"]:
        return True, f"promoted: {score:.4f} beats the champion's {champion['score']:.4f}"
    return False, f"kept: {score:.4f} does not beat the champion's {champion['score']:.4f}"


def promote_if_better(
    data_dir: str | Path, model: ArtifactRef, metrics: dict[str, float], metric: str, slot: str = "champion"
) -> dict:
    """Compare with the champion on ``metric``; write the new pointer atomically when promoted."""
    if metric not in metrics:
        raise ValueError(f"parameter promote_metric: {metric!r} is not one of {sorted(metrics)}")
    current = read_champion(data_dir, slot)
    promoted, reason = decide(current, model.key, metrics[metric])
    decision = {
        "metric": metric,
        "candidate": {"model_key": model.key, "score": metrics[metric]},
        "champion_before": None if current is None else {k: current[k] for k in ("model_key", "score")},
        "promoted": promoted,
        "reason": reason,
    }
    if promoted:
        path = champion_file(data_dir, slot)
        path.parent.mkdir(parents=True, exist_ok=True)
        record = {
            "model_key": model.key,
            "model_path": str(model.folder / "model"),
            "metric": metric,
            "score": metrics[metric],
            "metrics": metrics,
            "promoted_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
            "previous": current,
        }
        atomic_write_text(path, json.dumps(record, indent=2))
    champion = read_champion(data_dir, slot)
    decision["champion_after"] = {k: champion[k] for k in ("model_key", "score", "model_path")}
    return decision
