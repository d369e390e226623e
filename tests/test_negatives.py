"""Negatives on real MNLI rows: never a positive, inside the window, reproducible, clear errors."""

from __future__ import annotations

from dataclasses import replace

import faiss
import numpy as np
import pandas as pd
import pytest

from tasks.models.resolve import resolve_model
from tasks.negatives.embeddings import encode_cached
from tasks.negatives.index import StoredIndex, build_index, recall_at_k, write_index
from tasks.negatives.strategies import (
    MiningConfig,
    candidate_pool,
    contradiction_negatives,
    diagnostics,
    forbidden_texts,
    normalise,
    relative_ceiling,
    semi_hard_negatives,
    soft_negatives,
    triplet_columns,
)
from tasks.pairs.labels import CONTRADICTION, ENTAILMENT, NEUTRAL, mnr_pairs
from tasks.pairs.sources import negative_columns


def _positives_by_anchor(mnr: pd.DataFrame) -> dict[str, set[str]]:
    out: dict[str, set[str]] = {}
    for anchor, positive in zip(mnr["anchor"], mnr["positive"]):
        out.setdefault(normalise(anchor), set()).add(normalise(positive))
    return out


ROWS = ["anchor", "positive", "positive_score", "negative", "negative_score", "negative_rank"]


def _assert_unscored(triplets: pd.DataFrame) -> None:
    """A strategy that picks by no score: its scores and ranks are null (not NaN-as-a-value, not -1), still typed."""
    unscored = [c for c in triplets.columns if c.endswith(("_score", "_rank"))]
    assert unscored and triplets[unscored].isna().all().all()
    assert {str(triplets[c].dtype) for c in unscored} == {"float64", "Int64"}


def _assert_never_a_positive(triplets: pd.DataFrame, mnr: pd.DataFrame) -> None:
    positives = _positives_by_anchor(mnr)
    for column in negative_columns(triplets.columns):
        for anchor, negative in zip(triplets["anchor"], triplets[column]):
            assert normalise(negative) not in positives[normalise(anchor)]
            assert normalise(negative) != normalise(anchor)


def test_soft_negatives_are_another_premises_hypothesis(nli_sample):
    mnr = mnr_pairs(nli_sample)
    triplets = soft_negatives(mnr, nli_sample, MiningConfig(seed=7))
    assert list(triplets.columns) == ROWS
    _assert_unscored(triplets)
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
    assert list(columns.columns) == [
        *["anchor", "positive", "positive_score", "negative_1", "negative_2", "negative_3"],
        *["negative_1_score", "negative_2_score", "negative_3_score", "negative_1_rank", "negative_2_rank"],
        "negative_3_rank",
    ]
    assert list(rows.columns) == ROWS and len(columns) == len(mnr)
    _assert_unscored(columns)
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


def _contradicted() -> pd.DataFrame:
    """The bundled sample's rows of premises with both an entailment and a contradiction (90 premises)."""
    from tasks.pairs.sources import DEFAULT_NLI_SAMPLE

    full = pd.read_parquet(DEFAULT_NLI_SAMPLE)[["premise", "hypothesis", "label"]]
    labels = full.groupby("premise")["label"].agg(set)
    both = labels[labels.map(lambda s: {0, 2} <= s)].index
    return full[full["premise"].isin(both)].reset_index(drop=True)


def test_contradiction_negatives_come_from_the_same_premise():
    sample = _contradicted()
    both = sample["premise"].unique()
    mnr = mnr_pairs(sample)
    triplets = contradiction_negatives(mnr, sample, MiningConfig(strategy="contradiction"))
    contradicted = set(zip(sample.loc[sample["label"] == 2, "premise"], sample.loc[sample["label"] == 2, "hypothesis"]))
    assert len(triplets) == len(mnr) == len(both)
    assert list(triplets.columns) == ROWS
    _assert_unscored(triplets)
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
    assert facts | {"index": "flat", "recall_at_10": 1.0} == facts
    assert facts["removed_relative_margin"] == 0 and facts["removed_max_score"] == 0
    assert facts["admissible_candidates"] <= facts["window_candidates"] == 20 * len(mnr)


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


@pytest.mark.parametrize("layout, num_negatives", [("rows", 1), ("rows", 2), ("columns", 2)])
def test_every_strategy_writes_one_schema(nli_sample, mined, tmp_path, layout, num_negatives):
    """Soft, contradiction and semi-hard triplets of one layout: the same Parquet columns, order and types (the
    scores and ranks soft and contradiction lack: nulls), so DuckDB, polars and datasets read them together."""
    import pyarrow.parquet as pq

    from tasks.store.artifacts import write_parquet

    mnr, anchors, positives, candidates = mined
    config = MiningConfig(range_max=20, num_negatives=num_negatives, layout=layout)
    frames = {
        "soft": soft_negatives(mnr, nli_sample, config),
        "contradiction": contradiction_negatives(
            mnr_pairs(_contradicted()), _contradicted(), replace(config, strategy="contradiction")
        ),
        "semi-hard": semi_hard_negatives(
            mnr, nli_sample, anchors, positives, candidates, replace(config, strategy="semi-hard")
        )[0],
    }
    schemas = {}
    for strategy, frame in frames.items():
        assert len(frame) or (strategy, layout) == ("contradiction", "columns"), strategy  # few have 2: empty, typed
        write_parquet(frame, tmp_path / f"{strategy}.parquet")
        schemas[strategy] = pq.read_schema(tmp_path / f"{strategy}.parquet").remove_metadata()
    assert schemas["soft"] == schemas["contradiction"] == schemas["semi-hard"]
    assert schemas["soft"].names == list(triplet_columns(config))
    types = {name: str(schemas["soft"].field(name).type) for name in schemas["soft"].names}
    assert {t for n, t in types.items() if n.endswith("_score")} == {"double"}
    assert {t for n, t in types.items() if n.endswith("_rank")} == {"int64"}
    unscored = pq.read_table(tmp_path / "soft.parquet")
    assert all(unscored.column(n).null_count == len(unscored) for n in types if n.endswith(("_score", "_rank")))


def test_semi_hard_several_negatives_random_sampling_and_max_score(nli_sample, mined):
    mnr, anchors, positives, candidates = mined
    config = MiningConfig(
        strategy="semi-hard", num_negatives=3, range_max=30, max_score=0.6, sampling="random", layout="columns"
    )
    triplets, _ = semi_hard_negatives(mnr, nli_sample, anchors, positives, candidates, config)
    assert negative_columns(triplets.columns) == [
        "negative_1",
        "negative_2",
        "negative_3",
    ]
    assert list(triplets.columns) == list(triplet_columns(config))
    ranks = triplets[["negative_1_rank", "negative_2_rank", "negative_3_rank"]]
    assert ranks.notna().all().all() and ((ranks >= 0) & (ranks < 30)).all().all()
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


def _rule_failures(raw: pd.DataFrame, mnr, anchors, positives, candidates, config) -> dict[str, np.ndarray]:
    """Each rule on its own, for every candidate of the rank window (exact search, as the miner does)."""
    pool = candidate_pool(raw)
    forbidden = forbidden_texts(raw)
    k = min(config.range_max, len(pool))
    (_, scores, ids), *_ = build_index(candidates).search(anchors, k)
    positive = np.einsum("ij,ij->i", anchors, positives)[:, None]
    window = (ids >= 0) & (np.arange(k) >= config.range_min)
    banned = np.array(
        [[normalise(pool[c]) in forbidden[normalise(a)] for c in row] for a, row in zip(mnr["anchor"], ids)]
    )
    over_max = scores > config.max_score if config.max_score is not None else np.zeros_like(window)
    m = config.relative_margin  # the ceiling p - |p| * m, as (1 - m) * p or (1 + m) * p
    return {
        "same_premise": banned[window],
        "margin": (scores > positive - config.margin)[window],
        "max_score": over_max[window],
        "relative_margin": (scores > np.where(positive >= 0, 1 - m, 1 + m).astype(np.float32) * positive)[window]
        if config.relative_margin > 0
        else np.zeros(window.sum(), dtype=bool),
    }


def test_the_relative_margin_caps_negatives_at_a_share_of_the_positive(nli_sample, mined):
    mnr, anchors, positives, candidates = mined
    absolute = MiningConfig(strategy="semi-hard", range_max=30, num_negatives=2)
    relative = MiningConfig(strategy="semi-hard", range_max=30, num_negatives=2, relative_margin=0.3)
    before, _ = semi_hard_negatives(mnr, nli_sample, anchors, positives, candidates, absolute)
    after, facts = semi_hard_negatives(mnr, nli_sample, anchors, positives, candidates, relative)
    # the absolute margin alone lets through negatives above 0.7 x the positive: the cap has work to do
    assert (before["negative_score"] > 0.7 * before["positive_score"] + 1e-4).sum() >= 10
    assert len(after) > 0.5 * len(mnr)
    assert (after["negative_score"] <= 0.7 * after["positive_score"] + 1e-6).all()
    assert (after["negative_score"] <= after["positive_score"] - 0.05 + 1e-6).all()
    _assert_never_a_positive(after, mnr)
    assert facts["removed_relative_margin"] > 0
    assert (
        facts["admissible_candidates"]
        < semi_hard_negatives(mnr, nli_sample, anchors, positives, candidates, absolute)[1]["admissible_candidates"]
    )


def test_a_zero_relative_margin_changes_nothing(nli_sample, mined):
    mnr, anchors, positives, candidates = mined
    for extra in ({}, {"range_min": 2, "max_score": 0.6, "sampling": "random", "layout": "columns"}):
        unset = MiningConfig(strategy="semi-hard", range_max=30, num_negatives=2, **extra)
        zero = MiningConfig(strategy="semi-hard", range_max=30, num_negatives=2, relative_margin=0.0, **extra)
        before, before_facts = semi_hard_negatives(mnr, nli_sample, anchors, positives, candidates, unset)
        after, after_facts = semi_hard_negatives(mnr, nli_sample, anchors, positives, candidates, zero)
        assert after.equals(before) and after_facts == before_facts
        assert after_facts["removed_relative_margin"] == 0
    # 0 turns the rule off rather than capping at the positive itself: with a negative margin,
    # negatives scoring above their positive stay admissible
    loose = MiningConfig(strategy="semi-hard", range_max=30, margin=-0.2, relative_margin=0.0)
    triplets, _ = semi_hard_negatives(mnr, nli_sample, anchors, positives, candidates, loose)
    assert (triplets["negative_score"] > triplets["positive_score"]).any()


def test_the_relative_ceiling_stays_below_a_negative_positive_score():
    """sentence-transformers' fix: ``p - |p| * m``; NV-Retriever's ``(1 - m) * p`` unchanged for ``p`` >= 0."""
    positive = np.array([0.8, 0.25, 0.0, -0.5], dtype=np.float32)
    assert relative_ceiling(positive, 0.2) == pytest.approx([0.64, 0.2, 0.0, -0.6])
    scores = np.random.default_rng(0).uniform(-1, 1, 1000).astype(np.float32)
    assert (relative_ceiling(scores, 0.05) <= scores).all()
    above = scores[scores >= 0]
    assert np.array_equal(relative_ceiling(above, 0.05), (1 - 0.05) * above)  # bit for bit: the same negatives


def test_a_negative_positive_score_still_caps_its_negatives_below_it():
    """The reported case: for a positive scoring p < 0, (1 - m) * p lies above p, so the relative margin
    removed nothing there; now it removes the candidates above p - |p| * m."""
    anchor = np.array([[1.0, 0.0, 0.0]], dtype=np.float32)
    positive = np.array([[-0.5, 0.75**0.5, 0.0]], dtype=np.float32)  # scores -0.5 with the anchor
    close, far = [-0.55, 0.0, (1 - 0.55**2) ** 0.5], [-0.7, 0.0, -((1 - 0.7**2) ** 0.5)]
    candidates = np.array([positive[0], close, far], dtype=np.float32)  # in candidate_pool's order
    raw = pd.DataFrame(
        {
            "premise": ["a cat sat", "a dog ran", "it rained"],
            "hypothesis": ["the cat is sitting", "just below the positive", "far below the positive"],
            "label": [ENTAILMENT, NEUTRAL, CONTRADICTION],
        }
    )
    mnr = mnr_pairs(raw)
    config = MiningConfig(strategy="semi-hard", range_max=3, margin=0.0, relative_margin=0.2)
    triplets, facts = semi_hard_negatives(mnr, raw, anchor, positive, candidates, config)
    assert triplets["negative"].tolist() == ["far below the positive"]  # -0.55 is above the ceiling -0.6
    assert facts["removed_relative_margin"] == 2  # the positive itself (-0.5, also its premise's) and -0.55
    no_cap, _ = semi_hard_negatives(mnr, raw, anchor, positive, candidates, replace(config, relative_margin=0.0))
    assert no_cap["negative"].tolist() == ["just below the positive"]


@pytest.mark.parametrize(
    "extra",
    [
        {"relative_margin": 0.3},
        {"relative_margin": 0.2, "range_min": 3, "max_score": 0.3, "margin": 0.1},
        {},
    ],
)
def test_the_removal_counts_add_up(nli_sample, mined, extra):
    mnr, anchors, positives, candidates = mined
    config = MiningConfig(strategy="semi-hard", range_max=30, **extra)
    _, facts = semi_hard_negatives(mnr, nli_sample, anchors, positives, candidates, config)
    failures = _rule_failures(nli_sample, mnr, anchors, positives, candidates, config)
    failing = np.logical_or.reduce(list(failures.values()))
    assert facts["window_candidates"] == len(failing) == 30 * len(mnr) - (config.range_min * len(mnr))
    assert {rule: facts[f"removed_{rule}"] for rule in failures} == {r: int(f.sum()) for r, f in failures.items()}
    assert facts["admissible_candidates"] + int(failing.sum()) == facts["window_candidates"]
    removed = [facts[f"removed_{rule}"] for rule in failures]
    # each rule counted on its own: overlaps make the sum at least the number removed
    assert max(removed) <= facts["window_candidates"] - facts["admissible_candidates"] <= sum(removed)
    assert facts["removed_same_premise"] > 0
    assert (facts["removed_relative_margin"] > 0) == ("relative_margin" in extra)
    assert (facts["removed_max_score"] > 0) == ("max_score" in extra)


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


def test_ivf_lists_stay_balanced_when_the_vectors_share_a_direction():
    """A small miner's vectors lie close to one direction (cosine 0.96 to their mean on the scale bench). Plain
    k-means gives centroids of unequal norms, and under inner product the longest draws most vectors: a few lists
    hold the corpus and every query that probes them scans it. Spherical k-means keeps the lists even."""
    rng = np.random.default_rng(3)
    common = rng.normal(size=32)
    vectors = (3 * common / np.linalg.norm(common) + rng.normal(size=(8000, 32)) / np.sqrt(32)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    index = build_index(vectors, exact_limit=1000)
    assert index.kind.startswith("ivf")
    assert index.ivf.invlists.imbalance_factor() < 2.0  # 1.0: equal lists; plain k-means here: 10.3


def test_ivf_probes_are_calibrated_on_the_queries_to_the_fewest_that_reach_the_recall():
    rng = np.random.default_rng(2)
    centers = rng.normal(size=(40, 16))
    vectors = (centers[rng.integers(0, 40, 6000)] + 0.3 * rng.normal(size=(6000, 16))).astype(np.float32)
    queries = (centers[rng.integers(0, 40, 400)] + 0.3 * rng.normal(size=(400, 16))).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    queries /= np.linalg.norm(queries, axis=1, keepdims=True)
    index = build_index(vectors, exact_limit=1000, queries=queries[:200])
    nprobe = int(index.kind.split("nprobe")[1])
    assert recall_at_k(index, queries[:200], k=10) >= 0.9  # reached on the calibration queries
    assert recall_at_k(index, queries[200:], k=10) >= 0.85  # and on others like them
    index.ivf.nprobe = nprobe - max(1, nprobe // 16)  # one step fewer (the bisection's resolution) falls short
    assert recall_at_k(index, queries[:200], k=10) < 0.9


def test_an_ivf_scans_8_bit_codes_and_ranks_on_the_exact_vectors():
    """The lists hold a quarter of the bytes (the scan waits on memory), and the answers come back in the exact
    order with the exact scores: the negatives' scores are the miner's cosines, not an approximation of them."""
    rng = np.random.default_rng(4)
    centers = rng.normal(size=(30, 24))
    vectors = (centers[rng.integers(0, 30, 5000)] + 0.4 * rng.normal(size=(5000, 24))).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    index = build_index(vectors, exact_limit=1000)
    assert ",sq8,rflat," in index.kind and isinstance(index.ivf, faiss.IndexIVFScalarQuantizer)
    assert index.ivf.code_size == 24  # one byte a dimension, where an IVFFlat holds four
    (_, scores, ids), *_ = index.search(vectors[:200], 20, batch_size=200)
    exact = np.einsum("qd,qkd->qk", vectors[:200], vectors[ids])
    assert np.allclose(scores, exact, atol=1e-5)  # the exact vectors' scores, not the codes'
    assert np.all(np.diff(scores, axis=1) <= 1e-6)  # in their order


@pytest.mark.parametrize("exact_limit", [10_000, 1000])
def test_a_kept_index_reads_back_and_searches_as_the_one_built(tmp_path, exact_limit):
    rng = np.random.default_rng(1)
    centers = rng.normal(size=(20, 16))
    vectors = (centers[rng.integers(0, 20, 3000)] + 0.1 * rng.normal(size=(3000, 16))).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    built = build_index(vectors, exact_limit=exact_limit)
    write_index(built, tmp_path / "index.faiss")
    kept = StoredIndex(tmp_path / "index.faiss", built.kind).open(vectors)
    assert kept.kind == built.kind and kept.kind.startswith("flat" if exact_limit > 3000 else "ivf")
    queries = vectors[:300]
    (_, scores, ids), *_ = built.search(queries, 20, batch_size=300)
    (_, kept_scores, kept_ids), *_ = kept.search(queries, 20, batch_size=300)
    assert np.array_equal(ids, kept_ids) and np.array_equal(scores, kept_scores)  # an IVF's nprobe kept too
    assert recall_at_k(kept, queries) == recall_at_k(built, queries)
    with pytest.raises(ValueError, match="holds 3000 vectors, the candidates are 2999"):
        StoredIndex(tmp_path / "index.faiss", built.kind).open(vectors[:-1])


@pytest.mark.parametrize(
    "config, message",
    [
        (MiningConfig(strategy="semi-hard", range_min=5, range_max=5), "range_min < range_max"),
        (MiningConfig(strategy="semi-hard", range_min=0, range_max=4, num_negatives=5), "larger than the window"),
        (MiningConfig(strategy="hard"), "parameter negatives"),
        (MiningConfig(num_negatives=0), "at least 1"),
        (MiningConfig(sampling="best"), "parameter sampling"),
        (MiningConfig(layout="wide"), "negatives_layout"),
        (MiningConfig(strategy="semi-hard", relative_margin=-0.1), r"^parameter relative_margin: .*\[0, 1\).*-0\.1"),
        (MiningConfig(relative_margin=1.0), r"^parameter relative_margin: .*\[0, 1\).*1\.0"),
    ],
)
def test_impossible_settings_are_refused(config, message):
    with pytest.raises(ValueError, match=message):
        config.check()


@pytest.mark.parametrize("relative_margin", [0.0, 0.95])
@pytest.mark.parametrize("strategy", ["soft", "semi-hard"])
def test_a_relative_margin_in_range_is_accepted(strategy, relative_margin):
    MiningConfig(strategy=strategy, relative_margin=relative_margin).check()


def test_an_empty_corpus_is_refused():
    with pytest.raises(ValueError, match="candidate corpus is empty"):
        candidate_pool(pd.DataFrame({"premise": [], "hypothesis": [], "label": []}))
