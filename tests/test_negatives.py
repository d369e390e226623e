"""Negatives on real MNLI rows: never a positive, inside the window, reproducible, clear errors."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from tasks.embeddings import encode_cached
from tasks.index import build_index, recall_at_k
from tasks.labels import mnr_pairs
from tasks.models import resolve_model
from tasks.negatives import (
    MiningConfig,
    candidate_pool,
    contradiction_negatives,
    diagnostics,
    forbidden_texts,
    normalise,
    semi_hard_negatives,
    soft_negatives,
)


def _positives_by_anchor(mnr: pd.DataFrame) -> dict[str, set[str]]:
    out: dict[str, set[str]] = {}
    for anchor, positive in zip(mnr["anchor"], mnr["positive"]):
        out.setdefault(normalise(anchor), set()).add(normalise(positive))
    return out


def _negatives(triplets: pd.DataFrame) -> list[str]:
    return [c for c in triplets.columns if c == "negative" or (c.startswith("negative_") and c[9:].isdigit())]


def _assert_never_a_positive(triplets: pd.DataFrame, mnr: pd.DataFrame) -> None:
    positives = _positives_by_anchor(mnr)
    for column in _negatives(triplets):
        for anchor, negative in zip(triplets["anchor"], triplets[column]):
            assert normalise(negative) not in positives[normalise(anchor)]
            assert normalise(negative) != normalise(anchor)


def test_soft_negatives_are_another_premises_hypothesis(nli_sample):
    mnr = mnr_pairs(nli_sample)
    triplets = soft_negatives(mnr, nli_sample, MiningConfig(seed=7))
    assert list(triplets.columns) == ["anchor", "positive", "negative"]
    assert len(triplets) == len(mnr)
    _assert_never_a_positive(triplets, mnr)
    forbidden = forbidden_texts(nli_sample)
    assert all(normalise(n) not in forbidden[normalise(a)] for a, n in zip(triplets["anchor"], triplets["negative"]))
    assert set(triplets["negative"]) <= set(nli_sample["hypothesis"])


def test_soft_negatives_are_seeded(nli_sample):
    mnr = mnr_pairs(nli_sample)
    one = soft_negatives(mnr, nli_sample, MiningConfig(seed=1))
    assert one.equals(soft_negatives(mnr, nli_sample, MiningConfig(seed=1)))
    assert not one.equals(soft_negatives(mnr, nli_sample, MiningConfig(seed=2)))


def test_several_soft_negatives_as_rows_or_columns(nli_sample):
    mnr = mnr_pairs(nli_sample)
    rows = soft_negatives(mnr, nli_sample, MiningConfig(num_negatives=3))
    assert len(rows) == 3 * len(mnr)
    assert (rows.groupby(["anchor", "positive"])["negative"].nunique() == 3).all()
    columns = soft_negatives(mnr, nli_sample, MiningConfig(num_negatives=3, layout="columns"))
    assert list(columns.columns) == ["anchor", "positive", "negative_1", "negative_2", "negative_3"]
    assert len(columns) == len(mnr)
    _assert_never_a_positive(columns, mnr)


def test_a_case_or_space_variant_of_the_positive_is_never_chosen():
    pairs = pd.DataFrame(
        {
            "premise": ["The cat sat.", "A dog ran."],
            "hypothesis": ["A cat is sitting.", "  a CAT is   sitting. "],
            "label": [0, 0],
        }
    )
    mnr = mnr_pairs(pairs)
    # the only other candidate of each anchor is a variant of its own positive's text
    assert soft_negatives(mnr, pairs, MiningConfig(seed=0)).empty


def test_contradiction_negatives_come_from_the_same_premise():
    from tasks.sources import DEFAULT_NLI_SAMPLE

    full = pd.read_parquet(DEFAULT_NLI_SAMPLE)[["premise", "hypothesis", "label"]]
    labels = full.groupby("premise")["label"].agg(set)
    both = labels[labels.map(lambda s: {0, 2} <= s)].index  # the bundled subset has 90 such premises
    sample = full[full["premise"].isin(both)].reset_index(drop=True)
    mnr = mnr_pairs(sample)
    triplets = contradiction_negatives(mnr, sample, MiningConfig(strategy="contradiction"))
    contradicted = set(zip(sample.loc[sample["label"] == 2, "premise"], sample.loc[sample["label"] == 2, "hypothesis"]))
    assert len(triplets) == len(mnr) == len(both)
    assert all((a, n) in contradicted for a, n in zip(triplets["anchor"], triplets["negative"]))
    _assert_never_a_positive(triplets, mnr)


@pytest.fixture(scope="module")
def mined(nli_sample, tmp_path_factory):
    miner = resolve_model("sentence-transformers/all-MiniLM-L6-v2")
    data_dir = tmp_path_factory.mktemp("mine")
    mnr = mnr_pairs(nli_sample)
    pool = candidate_pool(nli_sample)
    texts = list(dict.fromkeys([*mnr["anchor"], *mnr["positive"], *pool]))
    vectors, _ = encode_cached(data_dir, miner, texts)
    row = {t: i for i, t in enumerate(texts)}
    pick = lambda items: vectors[[row[t] for t in items]]  # noqa: E731
    return mnr, pick(mnr["anchor"]), pick(mnr["positive"]), pick(pool)


def test_semi_hard_negatives_score_below_their_positive(nli_sample, mined):
    mnr, anchors, positives, candidates = mined
    config = MiningConfig(strategy="semi-hard", range_max=20, margin=0.05)
    triplets, facts = semi_hard_negatives(mnr, nli_sample, anchors, positives, candidates, config)
    assert list(triplets.columns) == [
        *["anchor", "positive", "positive_score", "negative"],
        *["negative_score", "negative_rank"],
    ]
    assert 0.8 * len(mnr) <= len(triplets) <= len(mnr)
    _assert_never_a_positive(triplets, mnr)
    assert (triplets["negative_score"] <= triplets["positive_score"] - 0.05 + 1e-6).all()
    assert triplets["negative_rank"].between(0, 19).all()
    assert facts == {"index": "flat", "recall_at_10": 1.0}


def test_semi_hard_picks_the_first_admissible_exact_neighbour(nli_sample, mined):
    mnr, anchors, positives, candidates = mined
    config = MiningConfig(strategy="semi-hard", range_min=2, range_max=30)
    triplets, _ = semi_hard_negatives(mnr, nli_sample, anchors, positives, candidates, config)
    pool = candidate_pool(nli_sample)
    forbidden = forbidden_texts(nli_sample)
    anchor_row = {a: i for i, a in enumerate(mnr["anchor"])}
    for _, row in triplets.head(25).iterrows():
        i = anchor_row[row["anchor"]]
        scores = candidates @ anchors[i]
        order = np.argsort(-scores, kind="stable")[2:30]
        ceiling = float(anchors[i] @ positives[i]) - 0.05
        admissible = [j for j in order if normalise(pool[j]) not in forbidden[normalise(row["anchor"])]]
        admissible = [j for j in admissible if scores[j] <= ceiling]
        assert row["negative_score"] == pytest.approx(float(scores[admissible[0]]), abs=1e-5)
        assert row["negative_rank"] >= 2


def test_semi_hard_several_negatives_random_sampling_and_max_score(nli_sample, mined):
    mnr, anchors, positives, candidates = mined
    config = MiningConfig(
        strategy="semi-hard", num_negatives=3, range_max=30, max_score=0.6, sampling="random", layout="columns"
    )
    triplets, _ = semi_hard_negatives(mnr, nli_sample, anchors, positives, candidates, config)
    assert [c for c in triplets.columns if c.startswith("negative_") and c[9:].isdigit()] == [
        "negative_1",
        "negative_2",
        "negative_3",
    ]
    scores = triplets[["negative_1_score", "negative_2_score", "negative_3_score"]]
    assert (scores.to_numpy() <= 0.6 + 1e-6).all()
    assert (scores.to_numpy() <= triplets[["positive_score"]].to_numpy() - 0.05 + 1e-6).all()
    _assert_never_a_positive(triplets, mnr)
    again, _ = semi_hard_negatives(mnr, nli_sample, anchors, positives, candidates, config)
    assert triplets.equals(again)
    facts = diagnostics(mnr, triplets, config)
    assert facts["pairs_with_negatives"] == len(triplets)
    assert facts["share_short_of_negatives"] == round((len(mnr) - len(triplets)) / len(mnr), 4)
    assert facts["mean_negative_score"] < facts["mean_positive_score"]


def test_the_approximate_index_runs_above_the_threshold(nli_sample, mined):
    mnr, anchors, positives, candidates = mined
    config = MiningConfig(strategy="semi-hard", range_max=20, exact_limit=100)
    triplets, facts = semi_hard_negatives(mnr, nli_sample, anchors, positives, candidates, config)
    assert facts["index"].startswith("ivf") and 0.5 <= facts["recall_at_10"] <= 1.0
    assert len(triplets) > 0.5 * len(mnr)
    _assert_never_a_positive(triplets, mnr)


def test_ivf_recall_is_measured_against_exact_search():
    rng = np.random.default_rng(0)
    centers = rng.normal(size=(20, 16))
    vectors = (centers[rng.integers(0, 20, 3000)] + 0.1 * rng.normal(size=(3000, 16))).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    index = build_index(vectors, exact_limit=1000)
    assert index.kind.startswith("ivf")
    assert 0.8 <= recall_at_k(index, vectors[:200], k=10) <= 1.0
    assert recall_at_k(build_index(vectors), vectors[:200]) == 1.0


@pytest.mark.parametrize(
    "config, message",
    [
        (MiningConfig(strategy="semi-hard", range_min=5, range_max=5), "range_min < range_max"),
        (MiningConfig(strategy="semi-hard", range_min=0, range_max=4, num_negatives=5), "larger than the window"),
        (MiningConfig(strategy="hard"), "parameter negatives"),
        (MiningConfig(num_negatives=0), "at least 1"),
        (MiningConfig(sampling="best"), "parameter sampling"),
        (MiningConfig(layout="wide"), "negatives_layout"),
    ],
)
def test_impossible_settings_are_refused(config, message):
    with pytest.raises(ValueError, match=message):
        config.check()


def test_an_empty_corpus_is_refused():
    with pytest.raises(ValueError, match="candidate corpus is empty"):
        candidate_pool(pd.DataFrame({"premise": [], "hypothesis": [], "label": []}))
