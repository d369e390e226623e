"""The label maps for each loss."""

from __future__ import annotations

import pandas as pd
import pytest

from tasks.pairs.labels import COLUMNS, pairs_for_loss

PAIRS = pd.DataFrame(
    {
        "premise": ["p0", "p0", "p0", "p1"],
        "hypothesis": ["entailed", "neutral", "contradicted", "also entailed"],
        "label": [0, 1, 2, 0],
    }
)


def test_softmax_keeps_three_labels():
    out = pairs_for_loss(PAIRS, "softmax")
    assert list(out.columns) == COLUMNS["softmax"]
    assert out["label"].tolist() == [0, 1, 2, 0]


def test_cosine_scores_entailment_one_else_zero():
    out = pairs_for_loss(PAIRS, "cosine")
    assert list(out.columns) == ["sentence1", "sentence2", "score"]
    assert out["score"].tolist() == [1.0, 0.0, 0.0, 1.0]
    assert out["score"].dtype == "float64"


def test_mnr_keeps_entailment_as_anchor_positive():
    out = pairs_for_loss(PAIRS, "mnr")
    assert list(out.columns) == ["anchor", "positive"]
    assert out.values.tolist() == [["p0", "entailed"], ["p1", "also entailed"]]


def test_unknown_loss_is_refused():
    with pytest.raises(ValueError, match="loss must be one of"):
        pairs_for_loss(PAIRS, "triplet")


def test_real_sample_counts(nli_sample):
    entailed = int((nli_sample["label"] == 0).sum())
    assert len(pairs_for_loss(nli_sample, "mnr")) == entailed
    assert pairs_for_loss(nli_sample, "cosine")["score"].sum() == entailed
    assert len(pairs_for_loss(nli_sample, "softmax")) == len(nli_sample)
