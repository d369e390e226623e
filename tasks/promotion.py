"""Promotion: the champion is replaced only by a model that really beats it, evaluated alike.

Scheduled retraining promotes a new model only when it beats the champion by a real gain: at least
``min_gain``, and for STS-B and held-out metrics a paired bootstrap interval of the gain above 0 (the
champion's per-pair similarities and per-query scores are kept beside its record for that). Both models
stay in the artifact store, and the pointer file records the decision's history. The record keeps how the
champion was evaluated (tasks, row limit, dimensions, the data's fingerprints, the held-out split): a
challenger evaluated otherwise is compared like with like first (``evaluation/alike.py``), or the decision
says why it cannot be. Reading, comparing and writing happen under one lock, so two runs finishing together end with the
better one as champion; on a URL store, across machines, the write is a compare-and-swap and a run that
loses it compares again.
"""

from __future__ import annotations

import datetime as dt
import logging
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple

from tasks.evaluation.alike import CannotCompare, ChampionOn, Compared, Reevaluate, Scores, comparable_scores
from tasks.evaluation.alike import reevaluation as reevaluation  # callers' name for it, here since before alike.py
from tasks.store import remote, transfer
from tasks.store.artifacts import ArtifactRef, file_sha256
from tasks.store.champion import (
    CHECKSUM,
    ChampionChanged,
    champion_file,
    champion_lock,
    read_champion,
    write_champion,
)

if TYPE_CHECKING:
    from tasks.evaluation.bootstrap import Interval

# A reseed alone moves the bundled setting's STS-B test Spearman by sd 0.0016 (4 seeds: 0.8358, 0.8321,
# 0.8331, 0.8345), so two reseeded runs differ by sd 0.0023: a reseed reaches a gain of 0.003 about one time
# in ten (README, "Champions").
MIN_GAIN = 0.003
COMPARE_ATTEMPTS = 5
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Verdict:
    """A decision and the rule that made it: "no champion", "already champion", "not compared",
    "min_gain" or "bootstrap"."""

    promoted: bool
    reason: str
    rule: str
    gain: float | None = None
    interval: Interval | None = None


def decide(champion: dict | None, model_key: str, metric: str, score: float, min_gain: float = MIN_GAIN,
           rescored: Scores | None = None) -> Verdict:  # fmt: skip
    """Promote when there is no champion, or the candidate gains at least ``min_gain`` (and more than
    nothing: a tie never promotes) on the same metric: the champion's recorded score, or ``rescored`` (its
    scores re-evaluated on the challenger's settings)."""
    if champion is None:
        return Verdict(True, "promoted: no champion yet", "no champion")
    if champion["model_key"] == model_key:
        return Verdict(False, "kept: this model is already the champion", "already champion")
    theirs = champion_score(champion, metric) if rescored is None else rescored.get(metric)
    if theirs is None:
        why = f"the champion has no {metric!r} score (it was promoted on {champion['metric']!r})"
        return Verdict(False, f"not compared: {why}", "not compared")
    gain = score - theirs
    if gain > 0 and gain >= min_gain:
        return Verdict(True, f"promoted: {score:.4f} beats the champion's {theirs:.4f} by {gain:.4f}", "min_gain", gain)
    why = f"{score:.4f} against the champion's {theirs:.4f} is a gain of {gain:+.4f}, below min_gain {min_gain}"
    return Verdict(False, f"kept: {why}", "min_gain", gain)


BOOTSTRAPPED = {"stsb_": "per-pair", "holdout_": "per-query"}  # a metric's prefix -> the file it is resampled from


def confirm_by_bootstrap(
    verdict: Verdict, metric: str, challenger_pairs: str | Path | None, champion_pairs: str | Path | None
) -> Verdict:
    """A min_gain promotion on an STS-B or held-out metric stands only if the gain's 95% bootstrap interval is
    above 0 (``*_pairs``: the metric's per-pair or per-query files); without both files it stands on min_gain
    alone, and the reason says so."""
    kind = next((name for prefix, name in BOOTSTRAPPED.items() if metric.startswith(prefix)), None)
    if not (verdict.promoted and verdict.rule == "min_gain" and kind):
        return verdict
    if challenger_pairs is None or champion_pairs is None:
        side = "challenger" if challenger_pairs is None else "champion"
        return _without_bootstrap(verdict, f"the {side} has no {kind} file")
    from tasks.evaluation.bootstrap import NoBootstrap, bootstrap_gain  # here: cleanup and the CLI need none of it

    try:
        interval = bootstrap_gain(Path(challenger_pairs), Path(champion_pairs), metric)
    except NoBootstrap as exc:
        return _without_bootstrap(verdict, str(exc))
    bounds = f"95% interval of the gain [{interval.low:+.4f}, {interval.high:+.4f}], {interval.resamples} resamples"
    if interval.low > 0:
        return Verdict(True, f"{verdict.reason}; {bounds}", "bootstrap", verdict.gain, interval)
    reason = verdict.reason.replace("promoted: ", "kept: ", 1) + f", but the {bounds} reaches 0 (could be chance)"
    return Verdict(False, reason, "bootstrap", verdict.gain, interval)


def _without_bootstrap(verdict: Verdict, why: str) -> Verdict:
    return Verdict(verdict.promoted, f"{verdict.reason} (no bootstrap: {why})", verdict.rule, verdict.gain)


def champion_score(champion: dict, metric: str) -> float | None:
    if metric == champion.get("metric"):
        return champion["score"]
    return (champion.get("metrics") or {}).get(metric)


class Promotion(NamedTuple):
    """A decision and the champion's record after it (None: still no champion)."""

    decision: dict
    champion: dict | None


def keep_pairs(data_dir: str | Path, slot: str, model_key: str, pairs: Path | None) -> str | None:
    """A copy of the new champion's per-pair file beside its record, out of reach of artifact cleanup
    (which keeps the champion's model, not its metrics artifact)."""
    if pairs is None or not pairs.is_file():
        return None
    kept = champion_file(data_dir, slot).parent / f"{slot}-pairs" / f"{model_key}-{file_sha256(pairs)[:12]}.parquet"
    if not kept.exists():
        kept.parent.mkdir(parents=True, exist_ok=True)
        tmp = kept.parent / f".tmp-{kept.name}"
        shutil.copyfile(pairs, tmp)
        tmp.replace(kept)
    transfer.push_files([kept])  # also when a push of it failed before: the record names it in the store
    return remote.public_path(kept)


def judge(
    data_dir: str | Path,
    model: ArtifactRef,
    metrics: Scores,
    metric: str,
    evaluation: dict,
    reevaluate: Reevaluate | None,
    slot: str,
    min_gain: float,
    pairs: str | Path | None,
    queries: str | Path | None = None,
    champion_on: ChampionOn | None = None,
) -> Promotion:
    """Read the champion, compare, and write the new pointer when promoted (the caller holds the lock)."""
    current = read_champion(data_dir, slot)
    compared = Compared(metrics, evaluation, None, None)
    try:
        compared = comparable_scores(current, model.key, metrics, evaluation, reevaluate, pairs, queries, champion_on)
    except CannotCompare as exc:
        verdict = Verdict(False, f"not compared: {exc}", "not compared")
    else:
        if metric not in compared.scores:
            verdict = Verdict(False, f"not compared: the champion's evaluation has no {metric!r}", "not compared")
        else:
            verdict = decide(current, model.key, metric, compared.scores[metric], min_gain, compared.champion)
            verdict = confirm_by_bootstrap(verdict, metric, *item_files(metric, compared, current))
    reason = f"{verdict.reason} ({compared.note})" if compared.note else verdict.reason
    decision = {
        "metric": metric,
        "candidate": {"model_key": model.key, "score": compared.scores.get(metric, metrics[metric])},
        "champion_before": None if current is None else {k: current[k] for k in ("model_key", "score")},
        "champion_rescored": None if compared.champion is None else compared.champion.get(metric),
        "compared_on": compared.settings,
        "promoted": verdict.promoted,
        "reason": reason,
        "rule": verdict.rule,
        "gain": verdict.gain,
        "min_gain": min_gain,
        "interval": None if verdict.interval is None else verdict.interval.record(),
    }
    if verdict.promoted:
        record = {
            "model_key": model.key,
            "model_path": remote.public_path(model.folder / "model"),
            "metric": metric,
            "score": compared.scores[metric],
            "metrics": compared.scores,
            "evaluation": compared.settings,
            "pairs": keep_pairs(data_dir, slot, model.key, compared.pairs),
            "queries": keep_pairs(data_dir, slot, model.key, compared.queries),
            "promoted_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
            "previous": _predecessor(current),
        }
        record = write_champion(data_dir, slot, record)  # the predecessor's record kept beside it, to restore
    champion = record if verdict.promoted else current
    decision["champion_after"] = (
        None if champion is None else {k: champion[k] for k in ("model_key", "score", "model_path")}
    )
    return Promotion(decision, champion)


def item_files(metric: str, compared: Compared, current: dict | None) -> tuple[Path | None, Path | None]:
    """The challenger's and the champion's files that ``metric`` is resampled from: STS-B's per-pair files, or
    the held-out per-query ones (the champion's from its re-evaluation, else those kept beside its record)."""
    name = "queries" if metric.startswith("holdout_") else "pairs"
    mine = compared.queries if name == "queries" else compared.pairs
    if compared.champion is not None:
        return mine, compared.champion_queries if name == "queries" else compared.champion_pairs
    theirs = None if current is None else current.get(name)
    return mine, None if theirs is None else Path(theirs)


def _predecessor(current: dict | None) -> dict | None:
    """The record being replaced, one level deep (its own predecessor left out: records do not nest)."""
    return None if current is None else {k: v for k, v in current.items() if k not in ("previous", CHECKSUM)}


def promote_if_better(*args, **kwargs) -> dict:
    """The decision of ``challenge`` (the same arguments), for callers that need only the decision."""
    return challenge(*args, **kwargs).decision


def challenge(
    data_dir: str | Path,
    model: ArtifactRef,
    metrics: Scores,
    metric: str,
    evaluation: dict | None = None,
    reevaluate: Reevaluate | None = None,
    slot: str = "champion",
    min_gain: float = MIN_GAIN,
    pairs: str | Path | None = None,
    queries: str | Path | None = None,
    champion_on: ChampionOn | None = None,
) -> Promotion:
    """Compare with the champion on ``metric``, like with like, under the champion's lock; write the new
    pointer atomically when promoted. Returns the decision and the champion's record after it.

    ``evaluation``: how ``metrics`` were computed (``EvalSettings.record()``); ``pairs``, ``queries``: that
    evaluation's STS-B per-pair and held-out per-query files. A champion evaluated otherwise is compared
    through ``reevaluate(its settings)`` (scores, or scores and their files), through ``champion_on(its record,
    these settings)`` when this run holds out a split it was not scored on, or not at all, and the reason says so."""
    if metric not in metrics:
        raise ValueError(f"parameter promote_metric: {metric!r} is not one of {sorted(metrics)}")
    check_min_gain(min_gain)
    for _ in range(COMPARE_ATTEMPTS):  # a compare-and-swap on a URL store: lost only to another promotion
        with champion_lock(data_dir, slot):
            try:
                return judge(data_dir, model, metrics, metric, evaluation or {}, reevaluate, slot, min_gain, pairs,
                             queries, champion_on)  # fmt: skip
            except ChampionChanged as exc:
                log.warning("%s: comparing again with the new champion", exc)
    raise RuntimeError(f"the champion of {data_dir} changed {COMPARE_ATTEMPTS} times while this run compared")


def check_min_gain(min_gain: float) -> None:
    """0 or more, and a number (NaN compares false with everything, so it would promote nothing, silently)."""
    if isinstance(min_gain, bool) or not isinstance(min_gain, int | float) or not min_gain >= 0:
        raise ValueError(f"parameter min_gain: must be a number, 0 or more, got {min_gain!r}")
