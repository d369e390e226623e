"""The label maps for each loss, and what they refuse: no entailment rows, pairs that are their own positive."""

from __future__ import annotations

import logging

import pandas as pd
import pytest

from tasks.negatives import strategies
from tasks.pairs.labels import COLUMNS, pairs_for_loss
from tasks.pairs.tables import DataError

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


def test_mnr_without_entailment_rows_says_so_before_any_model():
    """It used to give no pairs, and torch's num_samples=0 only once the model had loaded."""
    rows = PAIRS[PAIRS["label"] != 0]
    for loss in ("mnr", "gist"):
        with pytest.raises(DataError, match=r"nli.parquet: .*no entailment rows to take positives from"):
            pairs_for_loss(rows, loss, "nli.parquet")
    assert len(pairs_for_loss(rows, "softmax")) == 2


def test_ranking_pairs_whose_positive_is_the_anchor_are_dropped_and_counted(caplog):
    rows = pd.concat([PAIRS, pd.DataFrame({"premise": ["Same  text"], "hypothesis": [" same TEXT"], "label": [0]})])
    caplog.set_level(logging.WARNING, logger="tasks.pairs.labels")
    out = pairs_for_loss(rows, "mnr", "nli.parquet")
    assert out.values.tolist() == [["p0", "entailed"], ["p1", "also entailed"]]
    assert "nli.parquet: dropped 1 of 3 pair(s) whose positive equals the anchor" in caplog.text
    assert len(pairs_for_loss(rows, "softmax")) == 5  # the labelled losses keep every NLI row


@pytest.mark.parametrize(
    ("rows", "expected"),
    [
        (pd.DataFrame({"anchor": ["a"], "positive": ["b"]}), "only 1$"),
        (pd.DataFrame({"anchor": ["a", "B"], "positive": ["A", "b "]}), "only 0 once 2 whose positive equals"),
    ],
)
def test_ranking_losses_need_two_distinct_pairs(rows, expected):
    with pytest.raises(DataError, match=f"pairs.csv: loss 'mnr' needs at least 2 pairs.*{expected}"):
        pairs_for_loss(rows, "mnr", "pairs.csv")


def test_the_pairs_guard_normalises_texts_as_the_negatives_do():
    from tasks.pairs.labels import normalise

    texts = ["A  b", "a b", " A\tB\n", "ÀB", "àb", "a\u00a0b", ""]
    assert [normalise(t) for t in texts] == [strategies.normalise(t) for t in texts]
