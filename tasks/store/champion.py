"""The champion: the best model trained so far in a data folder, by one metric.

Scheduled retraining promotes a new model only when it beats the champion; both models
stay in the artifact store, and the pointer file records the decision's history. The record keeps
how the champion was evaluated (tasks, row limit, dimensions, the data's fingerprints): a challenger
evaluated otherwise is re-evaluated the champion's way first, or the decision says why it cannot be.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Callable
from pathlib import Path

from tasks.store.artifacts import ArtifactRef, artifacts_root, atomic_write_text


def champion_file(data_dir: str | Path, slot: str) -> Path:
    return artifacts_root(data_dir) / "champion" / f"{slot}.json"


def read_champion(data_dir: str | Path, slot: str = "champion") -> dict | None:
    try:
        return json.loads(champion_file(data_dir, slot).read_text())
    except (OSError, ValueError):
        return None


class CannotCompare(Exception):
    """The challenger cannot be scored the way the champion was; the message says why."""


def decide(champion: dict | None, model_key: str, metric: str, score: float) -> tuple[bool, str]:
    """Promote when there is no champion, or the candidate scores strictly higher on the same metric."""
    if champion is None:
        return True, "promoted: no champion yet"
    if champion["model_key"] == model_key:
        return False, "kept: this model is already the champion"
    theirs = champion_score(champion, metric)
    if theirs is None:
        return False, f"not compared: the champion has no {metric!r} score (it was promoted on {champion['metric']!r})"
    if score > theirs:
        return True, f"promoted: {score:.4f} beats the champion's {theirs:.4f}"
    return False, f"kept: {score:.4f} does not beat the champion's {theirs:.4f}"


def champion_score(champion: dict, metric: str) -> float | None:
    if metric == champion.get("metric"):
        return champion["score"]
    return (champion.get("metrics") or {}).get(metric)


def comparable_scores(
    current: dict | None,
    model_key: str,
    metrics: dict[str, float],
    evaluation: dict,
    reevaluate: Callable[[dict], dict[str, float]] | None,
) -> tuple[dict[str, float], dict, str | None]:
    """The challenger's scores on the champion's evaluation settings: its own when they match, else a
    re-evaluation on the champion's tasks, limits and dimensions. Raises CannotCompare when neither works."""
    if current is None or current["model_key"] == model_key:
        return metrics, evaluation, None
    theirs = current.get("evaluation")
    if theirs is None:
        raise CannotCompare(
            "the champion's record has no evaluation settings (promoted by an older version); "
            f"remove {current.get('model_key')!r} as champion (delete its pointer file) to start afresh"
        )
    if theirs == evaluation:
        return metrics, evaluation, None
    if reevaluate is None:
        raise CannotCompare(f"evaluated differently: champion {theirs}, challenger {evaluation}")
    return reevaluate(theirs), theirs, "re-evaluated on the champion's settings"


def promote_if_better(
    data_dir: str | Path,
    model: ArtifactRef,
    metrics: dict[str, float],
    metric: str,
    evaluation: dict | None = None,
    reevaluate: Callable[[dict], dict[str, float]] | None = None,
    slot: str = "champion",
) -> dict:
    """Compare with the champion on ``metric``, like with like; write the new pointer atomically when promoted.

    ``evaluation`` is how ``metrics`` were computed (``EvalSettings.record()``); a champion evaluated
    otherwise is compared through ``reevaluate(champion's settings)``, or not at all, and the reason says so.
    """
    if metric not in metrics:
        raise ValueError(f"parameter promote_metric: {metric!r} is not one of {sorted(metrics)}")
    evaluation = evaluation or {}
    current = read_champion(data_dir, slot)
    note = None
    try:
        scores, compared_on, note = comparable_scores(current, model.key, metrics, evaluation, reevaluate)
    except CannotCompare as exc:
        scores, compared_on = metrics, evaluation
        promoted, reason = False, f"not compared: {exc}"
    else:
        if metric not in scores:
            promoted, reason = False, f"not compared: the champion's evaluation has no {metric!r}"
        else:
            promoted, reason = decide(current, model.key, metric, scores[metric])
    if note:
        reason = f"{reason} ({note})"
    decision = {
        "metric": metric,
        "candidate": {"model_key": model.key, "score": scores.get(metric, metrics[metric])},
        "champion_before": None if current is None else {k: current[k] for k in ("model_key", "score")},
        "compared_on": compared_on,
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
            "score": scores[metric],
            "metrics": scores,
            "evaluation": compared_on,
            "promoted_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
            "previous": current,
        }
        atomic_write_text(path, json.dumps(record, indent=2))
    champion = read_champion(data_dir, slot)
    decision["champion_after"] = (
        None if champion is None else {k: champion[k] for k in ("model_key", "score", "model_path")}
    )
    return decision
