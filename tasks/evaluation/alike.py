"""Like with like: the scores on which a challenger and the champion are compared, from one evaluation.

A challenger evaluated as the champion was is compared on its own scores. Otherwise it is re-evaluated the
champion's way (``reevaluation``), or not compared, and the decision says why. One exception: a challenger
scored on a held-out split that the champion was not scored on (the source grew, or the champion came before
held-out splits) is judged on the user's data as it is now, so the champion is re-evaluated on the
challenger's settings instead (``champion_on``), and the decision says so.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple

from tasks.evaluation.settings import EvalSettings

Scores = dict[str, float]
# Scores, or scores with that evaluation's STS-B per-pair file, and optionally its held-out per-query file.
Reevaluated = Scores | tuple[Scores, str | Path | None] | tuple[Scores, str | Path | None, str | Path | None]
Reevaluate = Callable[[dict], Reevaluated]  # a champion's settings -> the challenger's scores on them
ChampionOn = Callable[[dict, dict], Reevaluated]  # (the champion's record, settings) -> the champion's scores


class CannotCompare(Exception):
    """The challenger cannot be scored the way the champion was; the message says why."""


class Compared(NamedTuple):
    """The challenger's scores on the settings compared on, that evaluation's per-item files (or None), and
    the champion's own scores and files when it was re-evaluated on the challenger's settings."""

    scores: Scores
    settings: dict
    note: str | None
    pairs: Path | None
    queries: Path | None = None
    champion: Scores | None = None
    champion_pairs: Path | None = None
    champion_queries: Path | None = None


def _path(value: str | Path | None) -> Path | None:
    return None if value is None else Path(value)


def unpacked(result: Reevaluated) -> tuple[Scores, Path | None, Path | None]:
    if not isinstance(result, tuple):
        return result, None, None
    scores, pairs, *queries = result
    return scores, _path(pairs), _path(queries[0] if queries else None)


def comparable_scores(
    current: dict | None,
    model_key: str,
    metrics: Scores,
    evaluation: dict,
    reevaluate: Reevaluate | None,
    pairs: str | Path | None = None,
    queries: str | Path | None = None,
    champion_on: ChampionOn | None = None,
) -> Compared:
    """The scores to compare: the challenger's own when evaluated alike, the champion's re-evaluation on a new
    held-out split, else the challenger re-evaluated the champion's way. Raises CannotCompare when none works."""
    own = Compared(metrics, evaluation, None, _path(pairs), _path(queries))
    if current is None or current["model_key"] == model_key:
        return own
    theirs = current.get("evaluation")
    if theirs is None:
        raise CannotCompare(
            "the champion's record has no evaluation settings (promoted by an older version); "
            f"remove {current.get('model_key')!r} as champion (delete its pointer file) to start afresh"
        )
    if theirs == evaluation:
        return own
    split = evaluation.get("holdout")
    if split is not None and theirs.get("holdout") != split:
        if champion_on is None:
            raise CannotCompare(f"the champion was not scored on the held-out split holdout/{split}")
        scores, their_pairs, their_queries = unpacked(champion_on(current, evaluation))
        before = f" (it had been scored on holdout/{theirs['holdout']})" if theirs.get("holdout") else ""
        note = f"the champion re-evaluated on the held-out split holdout/{split}{before}"
        return own._replace(note=note, champion=scores, champion_pairs=their_pairs, champion_queries=their_queries)
    if reevaluate is None:
        raise CannotCompare(f"evaluated differently: champion {theirs}, challenger {evaluation}")
    scores, again, again_queries = unpacked(reevaluate(theirs))
    return Compared(scores, theirs, "re-evaluated on the champion's settings", again, again_queries)


def reevaluation(evaluate: Callable[[EvalSettings], Reevaluated]) -> Reevaluate:
    """How to score a challenger the champion's way: ``evaluate`` under the champion's recorded settings, when
    this machine can repeat them (the same data and the same encoding precision)."""

    def reevaluate(record: dict) -> Reevaluated:
        try:
            settings = EvalSettings.from_record(record)
            now = settings.fingerprints
        except ValueError as exc:
            raise CannotCompare(f"the champion's evaluation cannot be repeated: {exc}") from exc
        if settings.effective_precision != record.get("precision", "fp32"):
            raise CannotCompare(
                f"the champion was evaluated in {record.get('precision', 'fp32')}, which this machine encodes in "
                f"{settings.effective_precision}"
            )
        changed = sorted(k for k in record.get("data", {}) if record["data"][k] != now.get(k))
        if changed:
            raise CannotCompare(f"the champion was evaluated on other data for {changed} than this checkout has")
        return evaluate(settings)

    return reevaluate
