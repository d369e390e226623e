"""The held-out split and its retrieval metrics: a row's side follows its anchor alone (a growing folder keeps
its split), no held-out text is trained on, the retrieval set is built from the held-out side, our metrics
equal sentence-transformers' InformationRetrievalEvaluator, the bootstrap over queries, and the checks."""

from __future__ import annotations

import re

import numpy as np
import pandas as pd
import pytest

from flows.checks import check_eval_source, check_settings
from tasks.evaluation.bootstrap import NoBootstrap, bootstrap_gain, mean_gain_interval, paired_queries
from tasks.evaluation.retrieval import metric_names, query_scores, ranked, retrieval_scores
from tasks.evaluation.settings import EvalSettings
from tasks.negatives.strategies import MiningConfig
from tasks.pairs import holdout
from tasks.pairs.holdout import MIN_QUERIES, RetrievalSet, against, check_holdout, read_retrieval, retrieval_set, split
from tasks.pairs.labels import ENTAILMENT, normalise
from tasks.pairs.sources import DEFAULT_NLI_SAMPLE, load_source
from tasks.pairs.tables import DataError
from tasks.promotion import MIN_GAIN
from tasks.recipes import Choices, apply_recipe
from tasks.training.recipe import TrainRecipe, TrainRuntime

NLI = ["premise", "hypothesis", "label"]
FRACTION = 0.05
DISTRACTORS = 150  # training-side texts: the corpus stays a few hundred texts, MiniLM encodes it in seconds
WHERE = f"parameter eval_holdout={FRACTION}"


def _key(row) -> tuple:
    return (row.premise, row.hypothesis, int(row.label))


def _keys(frame: pd.DataFrame) -> set[tuple]:
    return {_key(r) for r in frame.itertuples(index=False)}


def _texts(frame: pd.DataFrame) -> set[str]:
    return {normalise(t) for column in ("premise", "hypothesis") for t in frame[column]}


def _row_texts(row) -> set[str]:
    return {normalise(row.premise), normalise(row.hypothesis)}


def _held_anchor(prefix: str, fraction: float) -> str:
    """A text that hashes onto the held-out side at ``fraction``."""
    return next(f"{prefix} {i}" for i in range(10_000) if holdout._unit(f"{prefix} {i}") < fraction)


def _train_anchor(prefix: str, fraction: float) -> str:
    return next(f"{prefix} {i}" for i in range(10_000) if holdout._unit(f"{prefix} {i}") >= fraction)


@pytest.fixture(scope="module")
def sample() -> pd.DataFrame:
    """The whole bundled MNLI sample (9,888 rows), in the three NLI columns."""
    return pd.read_parquet(DEFAULT_NLI_SAMPLE)[NLI]


@pytest.fixture(scope="module")
def sample_split(sample) -> holdout.Split:
    return split(sample, FRACTION)


@pytest.fixture(scope="module")
def retrieval(sample_split) -> RetrievalSet:
    return retrieval_set(sample_split, DISTRACTORS, WHERE)


# 1. A growing folder keeps its split


def test_a_growing_folder_keeps_every_old_row_on_its_side(tmp_path, sample):
    fraction = 0.2
    folder = tmp_path / "pairs"
    folder.mkdir()
    old = sample.iloc[:4000].reset_index(drop=True)
    old.to_parquet(folder / "a.parquet")
    first = split(load_source(str(folder), None).frame, fraction)
    assert len(first.held) and len(first.train)

    # New rows: the rest of the sample, plus held-out rows (new anchors hashing below the fraction) whose
    # hypothesis is an old training row's text, in another case and spacing: those old rows must leave training
    trained = first.train.iloc[:5]
    shadowing = pd.DataFrame(
        {
            "premise": [_held_anchor(f"a brand new premise {i}", fraction) for i in range(len(trained))],
            "hypothesis": [f"  {t.upper()}  " for t in trained["hypothesis"]],
            "label": ENTAILMENT,
        }
    )
    new = pd.concat([sample.iloc[4000:8000], shadowing], ignore_index=True)
    new.to_parquet(folder / "b.parquet")
    grown = load_source(str(folder), None).frame
    assert len(grown) == len(old) + len(new)
    second = split(grown, fraction)

    held_before, held_after = _keys(first.held), _keys(second.held)
    train_after = _keys(second.train)
    assert held_before <= held_after  # every old held-out row still held out
    old_keys = _keys(old)
    new_held = second.held[[_key(r) not in old_keys for r in second.held.itertuples(index=False)]]
    new_held_texts = _texts(new_held)
    assert len(new_held) >= len(shadowing)

    lost = []
    for row in first.train.itertuples(index=False):
        key = _key(row)
        assert key not in held_after  # an old training row is never held out later
        if key not in train_after:
            lost.append(row)
            # dropped only for sharing a text with a new held-out row
            assert _row_texts(row) & new_held_texts, f"old training row {key} dropped for no reason"
        else:
            assert not _row_texts(row) & new_held_texts
    shadowed = {_key(r) for r in trained.itertuples(index=False)}
    assert shadowed <= {_key(r) for r in lost}  # the shadowed ones did leave training
    assert second.dropped >= len(lost)
    assert len(second.train) + len(second.held) + second.dropped == len(grown)


# 2. No held-out text on the training side


def _assert_disjoint(parts: holdout.Split) -> None:
    held_texts = _texts(parts.held)
    for row in parts.train.itertuples(index=False):
        assert not _row_texts(row) & held_texts, f"training row {_key(row)} shares a held-out text"


def test_the_split_keeps_every_held_out_text_off_the_training_side(sample, sample_split):
    parts = sample_split
    held_anchors = {normalise(a) for a in parts.held["premise"]}
    train_anchors = {normalise(a) for a in parts.train["premise"]}
    assert not held_anchors & train_anchors
    _assert_disjoint(parts)
    assert len(parts.train) + len(parts.held) + parts.dropped == len(sample)
    share = len(held_anchors) / len({normalise(a) for a in sample["premise"]})
    assert 0.03 <= share <= 0.07
    # a row's side depends on its anchor only: the same split whatever the row order
    shuffled = split(sample.sample(frac=1.0, random_state=7).reset_index(drop=True), FRACTION)
    assert _keys(shuffled.held) == _keys(parts.held) and _keys(shuffled.train) == _keys(parts.train)


def test_a_training_row_sharing_a_held_out_text_in_another_case_and_spacing_is_dropped(sample, sample_split):
    held_anchor = sample_split.held["premise"].iloc[0]
    train_premise = _train_anchor("an unseen training premise", FRACTION)
    echo = pd.DataFrame({"premise": [train_premise], "hypothesis": [f"\t{held_anchor.upper()}   "], "label": [1]})
    parts = split(pd.concat([sample, echo], ignore_index=True), FRACTION)
    assert train_premise not in set(parts.train["premise"])
    assert parts.dropped == sample_split.dropped + 1
    _assert_disjoint(parts)


def test_against_an_eval_source_drops_the_training_rows_sharing_its_texts(sample):
    evaluation = sample.iloc[:200].copy()
    evaluation["premise"] = [f" {t.upper()} " for t in evaluation["premise"]]  # case and spacing do not hide it
    parts = against(sample, evaluation)
    assert parts.held.equals(evaluation.reset_index(drop=True))
    assert parts.dropped >= 200 and len(parts.train) + parts.dropped == len(sample)
    _assert_disjoint(parts)
    # a pairs eval_source (anchor, positive) against NLI rows: the same guard across kinds
    anchors, positives = sample["hypothesis"].iloc[300:400], sample["premise"].iloc[400:500]
    pairs = pd.DataFrame({"anchor": anchors.to_numpy(), "positive": positives.to_numpy()})
    parts = against(sample, pairs)
    pair_texts = {normalise(t) for t in [*pairs["anchor"], *pairs["positive"]]}
    assert parts.dropped >= 200
    assert not any(_row_texts(r) & pair_texts for r in parts.train.itertuples(index=False))


# 3. The retrieval set


def test_the_retrieval_set_is_built_from_the_held_out_side(sample_split, retrieval, tmp_path):
    held, train = sample_split.held, sample_split.train
    entailed = held[held["label"] == ENTAILMENT]
    positives: dict[str, set[str]] = {}
    for anchor, positive in zip(entailed["premise"], entailed["hypothesis"]):
        if normalise(anchor) != normalise(positive):
            positives.setdefault(normalise(anchor), set()).add(normalise(positive))

    assert len(retrieval.queries) >= MIN_QUERIES and len(retrieval.relevant) == len(retrieval.queries)
    keys = [normalise(q) for q in retrieval.queries]
    assert len(set(keys)) == len(keys) and set(keys) == set(positives)  # every held-out anchor with a positive
    corpus = [normalise(t) for t in retrieval.corpus]
    assert len(set(corpus)) == len(corpus)  # no text twice
    first_distractor = len(corpus) - retrieval.distractors
    for key, relevant in zip(keys, retrieval.relevant):
        assert relevant and len(set(relevant)) == len(relevant)
        assert all(0 <= p < first_distractor for p in relevant)
        assert {corpus[p] for p in relevant} == positives[key]  # all of its positives, and only them
    assert set().union(*map(set, retrieval.relevant)) == set(range(first_distractor))

    # the distractors: the held-out anchors' other hypotheses, then training-side hypotheses, none held out
    held_texts = _texts(held)
    others = {normalise(t) for t in held.loc[held["label"] != ENTAILMENT, "hypothesis"]}
    train_hypotheses = {normalise(t) for t in train["hypothesis"]}
    distractors = corpus[first_distractor:]
    from_held = [t for t in distractors if t in held_texts]
    from_train = [t for t in distractors if t not in held_texts]
    assert set(from_held) <= others and set(from_train) <= train_hypotheses
    assert distractors == from_held + from_train  # the training side's last
    assert len(from_train) == DISTRACTORS
    assert not set(from_train) & held_texts
    assert set(from_held) == others - set(corpus[:first_distractor])  # every other hypothesis, once
    pool = sorted(train_hypotheses, key=lambda k: (holdout._unit(k), k))
    assert from_train == pool[:DISTRACTORS]  # the first by hash: the same texts whatever the row order

    holdout.write_retrieval(retrieval, tmp_path)
    assert read_retrieval(tmp_path) == retrieval


def test_a_split_with_too_few_queries_names_where_it_came_from(sample):
    where = "parameter eval_holdout=0.05 (nli_source data/tiny)"
    with pytest.raises(DataError, match=re.escape(where)) as raised:
        retrieval_set(split(sample.head(300), FRACTION), DISTRACTORS, where)
    assert f"fewer than {MIN_QUERIES}" in str(raised.value)


# 4. Equal to sentence-transformers' InformationRetrievalEvaluator


@pytest.fixture(scope="module")
def minilm():
    from tasks.models.encoding import load_model
    from tasks.models.resolve import BUNDLED_MINILM, resolve_model

    return load_model(resolve_model(BUNDLED_MINILM), device="cpu", precision="fp32")


@pytest.fixture(scope="module")
def encoded(minilm, retrieval) -> tuple[np.ndarray, np.ndarray]:
    """The queries and corpus encoded once (full dimension)."""
    queries = minilm.encode(retrieval.queries, batch_size=32, convert_to_numpy=True)
    corpus = minilm.encode(retrieval.corpus, batch_size=32, convert_to_numpy=True)
    return queries, corpus


def test_our_metrics_equal_the_information_retrieval_evaluator(minilm, retrieval, encoded, monkeypatch):
    """The evaluator scores, ranks (ties by corpus id: zero-padded positions, as ours by position) and
    averages on its own; its encode calls are served from our one encoding (checked equal to the model's own
    encode_query on a few texts), so that the whole set is encoded once."""
    import torch
    from sentence_transformers.evaluation import InformationRetrievalEvaluator

    queries, corpus = encoded
    assert len(retrieval.corpus) > 100  # recall@100 and the tie-break both have a corpus to work on
    own = minilm.encode_query(retrieval.queries[:4], convert_to_numpy=True)
    np.testing.assert_allclose(own, queries[:4], atol=1e-5)

    calls: list[int | None] = []

    def served(vectors: np.ndarray, texts: list[str]):
        rows = {t: i for i, t in enumerate(texts)}

        def encode(sentences, truncate_dim=None, **kwargs):
            calls.append(truncate_dim)
            block = vectors[[rows[s] for s in sentences]]
            return torch.from_numpy(np.ascontiguousarray(block[:, :truncate_dim] if truncate_dim else block))

        return encode

    monkeypatch.setattr(minilm, "encode_query", served(queries, retrieval.queries))
    monkeypatch.setattr(minilm, "encode_document", served(corpus, retrieval.corpus))

    ours, table = retrieval_scores(queries, corpus, retrieval, dims=(128,))
    assert list(ours) == metric_names((128,))
    assert len(table) == len(retrieval.queries)

    qids = [f"q{i:05d}" for i in range(len(retrieval.queries))]
    cids = [f"{i:06d}" for i in range(len(retrieval.corpus))]
    theirs = {}
    for dim in (None, 128):
        evaluator = InformationRetrievalEvaluator(
            queries=dict(zip(qids, retrieval.queries)),
            corpus=dict(zip(cids, retrieval.corpus)),
            relevant_docs={q: {cids[p] for p in rel} for q, rel in zip(qids, retrieval.relevant)},
            mrr_at_k=[10],
            ndcg_at_k=[10],
            precision_recall_at_k=[1, 10, 100],
            accuracy_at_k=[1],
            map_at_k=[100],
            name="ir",
            write_csv=False,
            truncate_dim=dim,
        )
        theirs[dim] = evaluator(minilm)
    assert calls == [None, None, 128, 128]  # queries and corpus, at each dimension

    for measure in ("ndcg@10", "mrr@10", "recall@1", "recall@10", "recall@100"):
        assert ours[f"holdout_{measure}"] == pytest.approx(theirs[None][f"ir_cosine_{measure}"], abs=1e-5), measure
        truncated = ours[f"holdout_{measure}_dim128"]
        assert truncated == pytest.approx(theirs[128][f"ir_cosine_{measure}"], abs=1e-5), measure
    assert any(len(r) > 1 for r in retrieval.relevant)  # the ideal DCG over two relevant documents is compared too
    assert 0.3 < ours["holdout_ndcg@10"] < 1.0  # MiniLM finds most positives, not all
    assert ours["holdout_ndcg@10_dim128"] != ours["holdout_ndcg@10"]  # the truncation was scored, not copied


# 5. Per-query measures by hand


def test_query_scores_by_hand():
    rest = list(range(4, 12))
    top = np.array(
        [
            [3, 1, 2, 0, *rest],  # one relevant doc (1) at rank 2
            [0, 7, 8, 9, 10, 11, 1, 2, 3, 4, 5, 6],  # two relevant: 0 at rank 1, 5 at rank 11
            [0, 1, 2, 3, 4, 5, 7, 8, 9, 10, 6, 11],  # relevant 6 at rank 11 only
            list(range(12)),  # all 12 relevant: the ideal DCG is over the first 10
        ]
    )
    relevant = [[1], [5, 0], [6], list(range(12))]
    scores = query_scores(top, relevant)
    assert list(scores) == ["mrr@10", "ndcg@10", "recall@1", "recall@10", "recall@100"]
    np.testing.assert_allclose(scores["mrr@10"], [0.5, 1.0, 0.0, 1.0])
    np.testing.assert_allclose(scores["ndcg@10"], [1 / np.log2(3), 1 / (1 + 1 / np.log2(3)), 0.0, 1.0])
    np.testing.assert_allclose(scores["recall@1"], [0.0, 0.5, 0.0, 1 / 12])
    np.testing.assert_allclose(scores["recall@10"], [1.0, 0.5, 0.0, 10 / 12])
    np.testing.assert_allclose(scores["recall@100"], [1.0, 1.0, 1.0, 1.0])


def test_ranked_breaks_ties_by_the_lower_corpus_position(monkeypatch):
    corpus = np.array([[0, 1], [1, 0], [0, 3], [2, 0], [-1, 0], [1, 0], [0, 1]], np.float32)
    query = np.array([[1, 0], [0, 2]], np.float32)
    top = ranked(query, corpus, depth=10)  # the depth is capped at the corpus
    assert top.shape == (2, 7)
    assert top[0].tolist() == [1, 3, 5, 0, 2, 6, 4]  # 1, 3 and 5 tie (cosine 1), then 0, 2 and 6 (cosine 0)
    assert top[1].tolist() == [0, 2, 6, 1, 3, 4, 5]
    assert ranked(query, corpus, depth=2).tolist() == [[1, 3], [0, 2]]
    # chunks of queries rank as one block does
    rng = np.random.default_rng(1)
    queries, docs = rng.normal(size=(7, 8)), rng.normal(size=(30, 8))
    whole = ranked(queries, docs, depth=5)
    monkeypatch.setattr("tasks.evaluation.retrieval.QUERY_CHUNK", 2)
    assert np.array_equal(ranked(queries, docs, depth=5), whole)


# 6. The bootstrap over queries


def _per_query(path, values: np.ndarray, queries: np.ndarray | None = None) -> str:
    queries = np.arange(len(values)) if queries is None else queries
    pd.DataFrame({"query": queries, "ndcg@10": values}).to_parquet(path)
    return path


def test_the_bootstrap_over_queries(tmp_path):
    rng = np.random.default_rng(5)
    base = rng.uniform(0.2, 0.8, 200)
    noise = rng.normal(0, 0.1, 200)
    champion = _per_query(tmp_path / "champion.parquet", base)
    better = _per_query(tmp_path / "better.parquet", base + 0.05)
    alike = _per_query(tmp_path / "alike.parquet", base + noise - noise.mean())

    gain = bootstrap_gain(better, champion, "holdout_ndcg@10")
    assert gain.low > 0 and gain.low == pytest.approx(0.05) and gain.high == pytest.approx(0.05)
    chance = bootstrap_gain(alike, champion, "holdout_ndcg@10")
    assert chance.low < 0 < chance.high
    assert bootstrap_gain(alike, champion, "holdout_ndcg@10") == chance  # the same seed, the same interval
    mine, theirs = paired_queries(alike, champion, "holdout_ndcg@10")
    reseeded = mean_gain_interval(mine, theirs, seed=1)
    assert (reseeded.low, reseeded.high) != (chance.low, chance.high) and reseeded.seed == 1

    # rows in another order pair by query
    order = rng.permutation(200)
    shuffled = _per_query(tmp_path / "shuffled.parquet", (base + noise - noise.mean())[order], order)
    assert bootstrap_gain(shuffled, champion, "holdout_ndcg@10") == chance

    other = _per_query(tmp_path / "other.parquet", base, np.arange(200) + 1)
    with pytest.raises(NoBootstrap, match="same held-out queries"):
        bootstrap_gain(other, champion, "holdout_ndcg@10")
    with pytest.raises(NoBootstrap, match="recall@10"):
        bootstrap_gain(better, champion, "holdout_recall@10")


# 7. Bad input, refused before any work


@pytest.mark.parametrize("fraction", [0.7, -0.1])
def test_an_impossible_holdout_fraction_is_refused(fraction):
    with pytest.raises(ValueError, match="eval_holdout") as raised:
        check_holdout(fraction, None, 2000)
    assert repr(fraction) in str(raised.value)


def test_a_holdout_fraction_with_an_eval_source_and_negative_distractors_are_refused():
    with pytest.raises(ValueError, match="eval_holdout"):
        check_holdout(0.05, "data/eval.parquet", 2000)
    with pytest.raises(ValueError, match="eval_distractors") as raised:
        check_holdout(0.05, None, -1)
    assert "-1" in str(raised.value)
    check_holdout(0.05, None, 0)
    check_holdout(0.0, "data/eval.parquet", 2000)


@pytest.mark.parametrize("suffix", ["csv", "parquet"])
def test_an_eval_source_without_pairs_is_refused(tmp_path, suffix):
    path = tmp_path / f"eval.{suffix}"
    frame = pd.DataFrame({"text": ["a", "b"], "label": [0, 1]})
    frame.to_csv(path, index=False) if suffix == "csv" else frame.to_parquet(path)
    with pytest.raises(ValueError, match="eval_source") as raised:
        check_eval_source(str(path))
    message = str(raised.value)
    assert str(path) in message and "premise" in message and "hypothesis" in message


def _settings_arguments() -> tuple:
    """As flows/train_embeddings.py builds them with every parameter at its default (no MTEB tasks)."""
    chosen = apply_recipe(None, Choices())
    mining = MiningConfig(strategy=chosen.negatives)
    recipe = TrainRecipe(
        loss=chosen.loss,
        epochs=chosen.epochs,
        batch_size=chosen.batch_size,
        learning_rate=chosen.learning_rate,
        warmup_steps=chosen.warmup_steps,
        precision=chosen.precision,
        batch_sampler=chosen.batch_sampler,
        mini_batch_size=chosen.mini_batch_size,
    )
    runtime = TrainRuntime(eval_steps=chosen.eval_steps)
    return chosen, 50_000, mining, recipe, runtime, EvalSettings(tasks=())


def test_a_held_out_promote_metric_needs_a_held_out_split():
    arguments = _settings_arguments()
    with pytest.raises(ValueError, match="promote_metric") as raised:
        check_settings(*arguments, "holdout_ndcg@10", MIN_GAIN, held_out=False)
    assert "eval_holdout" in str(raised.value) and "holdout_ndcg@10" in str(raised.value)
    check_settings(*arguments, "holdout_ndcg@10", MIN_GAIN, held_out=True)
    check_settings(*arguments, "stsb_test_spearman", MIN_GAIN, held_out=False)
    with pytest.raises(ValueError, match="promote_metric"):  # no eval_dims: no truncated held-out metric
        check_settings(*arguments, "holdout_ndcg@10_dim64", MIN_GAIN, held_out=True)
