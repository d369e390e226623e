"""Champion promotion: only a strictly better model replaces the champion; both are kept."""

from __future__ import annotations

import pytest

from tasks.artifacts import ArtifactRef
from tasks.champion import promote_if_better, read_champion


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
