"""Correctness anchors: the bundled all-MiniLM-L6-v2 scores as published.

STS-B test Spearman 0.8203 and validation 0.8672 (EmbeddingSimilarityEvaluator, gold / 5), and
mteb's own Banking77Classification accuracy 0.8004 on the bundled data, as on the MTEB leaderboard.
"""

from __future__ import annotations

import pytest

from tasks.evaluation import banking77_splits, evaluate_model
from tasks.models import load_model, resolve_model

pytestmark = pytest.mark.integration


def test_bundled_minilm_reproduces_the_published_scores(tmp_path):
    model = load_model(resolve_model("sentence-transformers/all-MiniLM-L6-v2"))
    metrics = evaluate_model(model, None, tmp_path)
    assert metrics["stsb_test_spearman"] == pytest.approx(0.8203, abs=5e-4)
    assert metrics["stsb_validation_spearman"] == pytest.approx(0.8672, abs=5e-4)
    assert metrics["banking77_accuracy"] == pytest.approx(0.8004, abs=5e-4)
    assert (tmp_path / "mteb" / "banking77.json").exists()


def test_limited_banking77_is_stratified():
    splits = banking77_splits(154)
    for df in splits.values():
        assert df["label"].nunique() == 77
        assert (df["label"].value_counts() == 2).all()
