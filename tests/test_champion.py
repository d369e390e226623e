"""Champion promotion: only a strictly better model replaces the champion; both are kept."""

from __future__ import annotations

import pytest

from tasks.store.artifacts import ArtifactRef
from tasks.store.champion import promote_if_better, read_champion


def _model(tmp_path, key: str) -> ArtifactRef:
    return ArtifactRef("models", key, str(tmp_path / "artifacts" / "models" / key))


def test_first_model_becomes_champion(tmp_path):
    decision = promote_if_better(tmp_path, _model(tmp_path, "a"), {"stsb_test_spearman": 0.5}, "stsb_test_spearman")
    assert decision["promoted"] and decision["champion_before"] is None
    assert read_champion(tmp_path)["model_key"] == "a"


def test_only_a_better_model_is_promoted(tmp_path):
    metric = "stsb_test_spearman"
    promote_if_better(tmp_path, _model(tmp_path, "a"), {metric: 0.5}, metric)
    worse = promote_if_better(tmp_path, _model(tmp_path, "b"), {metric: 0.4}, metric)
    assert not worse["promoted"] and worse["champion_after"]["model_key"] == "a"
    tie = promote_if_better(tmp_path, _model(tmp_path, "c"), {metric: 0.5}, metric)
    assert not tie["promoted"]
    better = promote_if_better(tmp_path, _model(tmp_path, "d"), {metric: 0.6}, metric)
    assert better["promoted"] and better["champion_before"] == {"model_key": "a", "score": 0.5}
    champion = read_champion(tmp_path)
    assert champion["model_key"] == "d" and champion["previous"]["model_key"] == "a"


def test_the_same_model_is_kept_not_repromoted(tmp_path):
    metric = "banking77_accuracy"
    promote_if_better(tmp_path, _model(tmp_path, "a"), {metric: 0.7}, metric)
    again = promote_if_better(tmp_path, _model(tmp_path, "a"), {metric: 0.7}, metric)
    assert not again["promoted"] and "already the champion" in again["reason"]


def test_unknown_metric_is_refused(tmp_path):
    with pytest.raises(ValueError, match="promote_metric"):
        promote_if_better(tmp_path, _model(tmp_path, "a"), {"x": 1.0}, "y")


SETTINGS_A = {"tasks": ["Banking77Classification"], "limit": 100, "dims": [], "data": {"stsb": "bundled:x"}}
SETTINGS_B = {"tasks": ["Banking77Classification"], "limit": None, "dims": [], "data": {"stsb": "bundled:x"}}


def test_a_challenger_evaluated_differently_is_re_evaluated_the_champions_way(tmp_path):
    metric = "stsb_test_spearman"
    promote_if_better(tmp_path, _model(tmp_path, "a"), {metric: 0.50}, metric, SETTINGS_A)
    asked = []

    def reevaluate(settings):
        asked.append(settings)
        return {metric: 0.49}  # better on its own settings (0.90), worse on the champion's

    decision = promote_if_better(tmp_path, _model(tmp_path, "b"), {metric: 0.90}, metric, SETTINGS_B, reevaluate)
    assert asked == [SETTINGS_A]
    assert not decision["promoted"] and "re-evaluated on the champion's settings" in decision["reason"]
    assert decision["candidate"]["score"] == 0.49 and decision["compared_on"] == SETTINGS_A

    better = promote_if_better(
        tmp_path, _model(tmp_path, "c"), {metric: 0.1}, metric, SETTINGS_B, lambda s: {metric: 0.6}
    )
    assert better["promoted"]
    champion = read_champion(tmp_path)
    assert champion["evaluation"] == SETTINGS_A and champion["score"] == 0.6  # scores of the settings compared on


def test_a_challenger_that_cannot_be_evaluated_the_same_way_is_never_compared(tmp_path):
    from tasks.store.champion import CannotCompare

    metric = "stsb_test_spearman"
    promote_if_better(tmp_path, _model(tmp_path, "a"), {metric: 0.5}, metric, SETTINGS_A)

    def reevaluate(settings):
        raise CannotCompare("the champion's STS-B data had another fingerprint")

    decision = promote_if_better(tmp_path, _model(tmp_path, "b"), {metric: 0.9}, metric, SETTINGS_B, reevaluate)
    assert not decision["promoted"] and decision["reason"].startswith("not compared: the champion's STS-B data")
    no_way = promote_if_better(tmp_path, _model(tmp_path, "c"), {metric: 0.9}, metric, SETTINGS_B)
    assert not no_way["promoted"] and "evaluated differently" in no_way["reason"]
    assert read_champion(tmp_path)["model_key"] == "a"


def test_a_champion_without_evaluation_settings_or_the_metric_is_not_compared(tmp_path):
    import json

    from tasks.store.champion import champion_file

    promote_if_better(tmp_path, _model(tmp_path, "a"), {"m": 0.5, "n": 0.5}, "m", SETTINGS_A)
    other_metric = promote_if_better(tmp_path, _model(tmp_path, "b"), {"m": 0.1, "n": 0.9}, "n", SETTINGS_A)
    assert other_metric["promoted"]  # the champion's record holds its "n" score too: 0.9 > 0.5
    missing = promote_if_better(tmp_path, _model(tmp_path, "c"), {"m": 0.1, "z": 0.9}, "z", SETTINGS_A)
    assert not missing["promoted"] and "no 'z' score" in missing["reason"]
    record = json.loads(champion_file(tmp_path, "champion").read_text())
    record.pop("evaluation")  # as written by an older version
    champion_file(tmp_path, "champion").write_text(json.dumps(record))
    legacy = promote_if_better(tmp_path, _model(tmp_path, "d"), {"n": 0.99}, "n", SETTINGS_A)
    assert not legacy["promoted"] and "no evaluation settings" in legacy["reason"]
