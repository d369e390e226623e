"""Real SentenceTransformerTrainer runs on a tiny BERT, one per loss, on CPU."""

from __future__ import annotations

import json

import pytest
from sentence_transformers import SentenceTransformer

from tasks.evaluation import sts_validation
from tasks.labels import pairs_for_loss
from tasks.negatives import MiningConfig, soft_negatives
from tasks.training import TrainConfig, train_model, training_columns


@pytest.mark.parametrize("loss", ["softmax", "cosine", "mnr"])
def test_each_loss_trains_and_saves_a_loadable_model(tmp_path, tiny_bert, nli_sample, loss):
    data = pairs_for_loss(nli_sample, loss)
    if loss == "mnr":
        data = soft_negatives(data, nli_sample, MiningConfig())
    config = TrainConfig(loss=loss, batch_size=8, warmup_steps=1, eval_steps=3, max_steps=4)
    summary = train_model(str(tiny_bert), data, sts_validation(40), config, tmp_path)

    assert summary["steps"] == 4
    assert summary["device"] == "cpu" and summary["mixed_precision"] == "no"
    assert any("eval_sts-dev_spearman_cosine" in entry for entry in summary["log_history"])
    assert json.loads((tmp_path / "training.json").read_text())["steps"] == 4
    assert not (tmp_path / "_trainer").exists()
    model = SentenceTransformer(str(tmp_path / "model"))
    before = SentenceTransformer(str(tiny_bert)).encode(["a test"])
    assert model.encode(["a test"]).shape == before.shape == (1, 32)
    assert abs(model.encode(["a test"]) - before).max() > 0  # the weights moved


def test_columns_follow_the_loss_order(nli_sample):
    mnr = soft_negatives(pairs_for_loss(nli_sample, "mnr"), nli_sample, MiningConfig())
    assert training_columns(mnr.assign(positive_score=0.0), "mnr") == ["anchor", "positive", "negative"]
    assert training_columns(pairs_for_loss(nli_sample, "cosine"), "cosine") == ["sentence1", "sentence2", "score"]
