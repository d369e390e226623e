"""Correctness anchors: the bundled all-MiniLM-L6-v2 scores as published.

STS-B test Spearman 0.8203 and validation 0.8672 (EmbeddingSimilarityEvaluator, gold / 5), and
mteb's own Banking77Classification accuracy 0.8004 and STSBenchmark 0.8203 on the bundled data, as
on the MTEB leaderboard, with texts encoded in token-length order.
"""

from __future__ import annotations

import numpy as np
import pytest

from tasks.evaluation.data import banking77_splits, stsb_pairs
from tasks.evaluation.evaluate import evaluate_model, metrics_table
from tasks.evaluation.settings import EvalSettings
from tasks.evaluation.stsb import spearman_scores, stsb_similarities
from tasks.models.encoding import load_model
from tasks.models.resolve import resolve_model


@pytest.mark.integration
def test_bundled_minilm_reproduces_the_published_scores(tmp_path):
    model = load_model(resolve_model("sentence-transformers/all-MiniLM-L6-v2"), precision="fp32")
    progress: list[float] = []
    settings = EvalSettings(("Banking77Classification", "STSBenchmark"))
    metrics = evaluate_model(model, settings, tmp_path, progress.append)
    assert metrics["stsb_test_spearman"] == pytest.approx(0.8203, abs=5e-5)
    assert metrics["stsb_validation_spearman"] == pytest.approx(0.8672, abs=5e-5)
    assert metrics["banking77_accuracy"] == pytest.approx(0.8004, abs=5e-5)
    assert metrics["stsbenchmark_cosine_spearman"] == pytest.approx(0.8203, abs=5e-5)  # MTEB leaderboard: 82.03
    assert (tmp_path / "mteb" / "Banking77Classification.json").exists()
    assert len(progress) > 50 and progress == sorted(progress) and progress[-1] == 1.0  # reported as it goes
    assert list(metrics) == settings.metric_names()


def test_truncated_embeddings_are_the_ones_evaluated(tiny_bert):
    """STS-B at a Matryoshka dimension is the Spearman of the model's own truncated embeddings."""
    from scipy.stats import spearmanr
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(str(tiny_bert))
    pairs = stsb_pairs("test", 60)
    splits = {"validation": stsb_pairs("validation", 60), "test": pairs}
    scores = spearman_scores(stsb_similarities(model, splits, dims=(16, 8)), dims=(16, 8))  # as evaluate_model
    for dim in (16, 8):
        a = model.encode(pairs["sentence1"].tolist(), truncate_dim=dim, normalize_embeddings=True)
        b = model.encode(pairs["sentence2"].tolist(), truncate_dim=dim, normalize_embeddings=True)
        expected = spearmanr(pairs["score"], (a * b).sum(axis=1)).statistic
        assert scores[f"stsb_test_spearman_dim{dim}"] == pytest.approx(expected, abs=1e-5)
    assert scores["stsb_test_spearman_dim16"] != pytest.approx(scores["stsb_test_spearman"], abs=1e-6)
    table = metrics_table(scores, (16, 8))
    assert list(table.columns) == ["metric", "value", "dim_16", "dim_8"]
    assert table["metric"].tolist() == ["stsb_validation_spearman", "stsb_test_spearman"]
    assert np.isfinite(table[["value", "dim_16", "dim_8"]].to_numpy()).all()


def test_token_order_pads_less_than_character_order_and_keeps_every_text_in_place(tiny_bert):
    from sentence_transformers import SentenceTransformer

    from tasks.models.encoding import encode_in_token_order, text_token_lengths

    model = SentenceTransformer(str(tiny_bert))
    texts = stsb_pairs("validation", 200)["sentence1"].tolist()
    ours = encode_in_token_order(model, texts, 16)
    assert np.allclose(ours, model.encode(texts, batch_size=16), atol=1e-5)
    lengths = np.array(text_token_lengths(model, texts))

    def padded(order):
        return sum(lengths[order[i : i + 16]].max() * len(order[i : i + 16]) for i in range(0, len(order), 16))

    by_tokens, by_chars = np.argsort(-lengths, kind="stable"), np.argsort([-len(t) for t in texts], kind="stable")
    assert padded(by_tokens) < padded(by_chars)


def test_limited_banking77_is_stratified():
    splits = banking77_splits(154)
    for df in splits.values():
        assert df["label"].nunique() == 77
        assert (df["label"].value_counts() == 2).all()


def test_evaluation_keeps_each_stsb_pair_s_similarity_for_the_champion_bootstrap(tiny_bert, tmp_path):
    """stsb_pairs.parquet holds the very similarities the metrics were computed from, split by split."""
    import pandas as pd
    from scipy.stats import spearmanr
    from sentence_transformers import SentenceTransformer

    from tasks.evaluation.bootstrap import bootstrap_gain

    model = SentenceTransformer(str(tiny_bert))
    metrics = evaluate_model(model, EvalSettings(tasks=(), limit=60, dims=(16,)), tmp_path)
    pairs = pd.read_parquet(tmp_path / "stsb_pairs.parquet")
    assert list(pairs.columns) == ["split", "pair", "gold", "cosine", "cosine_dim16"]
    assert pairs.groupby("split")["pair"].apply(list).to_dict() == {
        "test": list(range(60)),
        "validation": list(range(60)),
    }
    test = pairs[pairs["split"] == "test"]
    assert test["gold"].tolist() == (stsb_pairs("test", 60)["score"] / 5.0).tolist()
    assert spearmanr(test["gold"], test["cosine"]).statistic == metrics["stsb_test_spearman"]
    assert spearmanr(test["gold"], test["cosine_dim16"]).statistic == metrics["stsb_test_spearman_dim16"]
    assert spearman_scores(pairs, dims=(16,)) == metrics  # the metrics are the kept pairs' Spearman, exactly
    same = bootstrap_gain(tmp_path / "stsb_pairs.parquet", tmp_path / "stsb_pairs.parquet", "stsb_test_spearman_dim16")
    assert (same.low, same.high) == (0.0, 0.0)
