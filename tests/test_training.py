"""Real SentenceTransformerTrainer runs on a tiny BERT, one per loss, on CPU."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from sentence_transformers import SentenceTransformer
from transformers import TrainerCallback

from tasks.evaluation.data import stsb_pairs
from tasks.negatives.strategies import MiningConfig, soft_negatives
from tasks.pairs.labels import pairs_for_loss
from tasks.training import batches, distributed, tokens
from tasks.training.checkpoints import LOSS_HEAD
from tasks.training.recipe import TrainRecipe, TrainRuntime, recipe_and_runtime
from tasks.training.trainer import train_model


@pytest.mark.parametrize("loss", ["softmax", "cosine", "mnr"])
def test_each_loss_trains_and_saves_a_loadable_model(tmp_path, tiny_bert, nli_sample, loss):
    data = pairs_for_loss(nli_sample, loss)
    if loss == "mnr":
        data = soft_negatives(data, nli_sample, MiningConfig())
    config = recipe_and_runtime(loss=loss, batch_size=8, warmup_steps=1, eval_steps=3, max_steps=4)
    summary = train_model(str(tiny_bert), data, stsb_pairs("validation", 40), *config, tmp_path)

    assert summary["steps"] == 4
    assert summary["device"] == "cpu" and summary["mixed_precision"] == "no"
    assert summary["samples_per_second"] > 0 and summary["tokens_per_second"] > summary["samples_per_second"]
    assert summary["mfu"] is None  # only estimated on a known GPU
    assert any("eval_sts-dev_spearman_cosine" in entry for entry in summary["log_history"])
    assert json.loads((tmp_path / "training.json").read_text())["steps"] == 4
    assert not (tmp_path / "_trainer").exists()
    model = SentenceTransformer(str(tmp_path / "model"))
    before = SentenceTransformer(str(tiny_bert)).encode(["a test"])
    assert model.encode(["a test"]).shape == before.shape == (1, 32)
    assert abs(model.encode(["a test"]) - before).max() > 0  # the weights moved


def test_the_trainers_dataset_has_the_loss_columns_in_its_order(tiny_bert, nli_sample):
    """What the trainer hands the loss: its text columns in the order it reads them (mined negatives last,
    other columns left out), then the label or score; a ranking loss gets no score."""
    model = SentenceTransformer(str(tiny_bert))

    def columns(frame, loss: str) -> list[str]:
        table = tokens.tokenize_frame(frame, loss, model)
        return batches.token_dataset(tokens.TokenizedData(table, tokens.tokenizer_spec(model))).column_names

    mnr = soft_negatives(pairs_for_loss(nli_sample, "mnr"), nli_sample, MiningConfig())
    assert columns(mnr.assign(positive_score=0.0), "mnr") == ["anchor", "positive", "negative"]
    assert columns(pairs_for_loss(nli_sample, "cosine"), "cosine") == ["sentence1", "sentence2", "score"]
    assert columns(pairs_for_loss(nli_sample, "softmax"), "softmax") == ["premise", "hypothesis", "label"]


def test_each_torchrun_process_reads_the_token_ids_as_arrow_only(tmp_path, tiny_bert, nli_sample, monkeypatch):
    """A process of a launch with token ids reads them as an Arrow table: none goes through pandas (only the
    STS-B validation pairs do), and the ids reach train_model with the spec they were made with."""
    model = SentenceTransformer(str(tiny_bert))
    frame = pairs_for_loss(nli_sample.head(40), "cosine")
    ids = tokens.TokenizedData(tokens.tokenize_frame(frame, "cosine", model), tokens.tokenizer_spec(model))
    pq.write_table(ids.table, tmp_path / "train.parquet")  # as train_distributed writes them
    stsb_pairs("validation", 8).to_parquet(tmp_path / "sts.parquet")
    spec = {"model": str(tiny_bert), "recipe": {"matryoshka_dims": []}, "runtime": {}, "out": str(tmp_path),
            "dir": str(tmp_path), "tokenizer": ids.spec.as_dict(), "guide": None}  # fmt: skip
    (tmp_path / "spec.json").write_text(json.dumps(spec))
    read, calls = [], []
    real_read = distributed.pd.read_parquet
    monkeypatch.setattr(distributed.pd, "read_parquet", lambda path, *a, **k: read.append(path) or real_read(path))
    monkeypatch.setattr(distributed, "train_model", lambda *args, **kwargs: calls.append(args))
    distributed.main(str(tmp_path / "spec.json"))
    assert [p.name for p in map(Path, read)] == ["sts.parquet"]
    train = calls[0][1]
    assert isinstance(train, tokens.TokenizedData) and train.spec == ids.spec
    assert train.table.column_names == ids.table.column_names and len(train) == 40


def test_strong_settings_train_on_cpu(tmp_path, tiny_bert, nli_sample):
    from tasks.negatives.strategies import MiningConfig as Mining

    data = soft_negatives(pairs_for_loss(nli_sample, "mnr"), nli_sample, Mining())
    config = recipe_and_runtime(
        loss="mnr",
        batch_size=16,
        mini_batch_size=4,
        batch_sampler="no_duplicates",
        precision="bf16",
        warmup_steps=-1,
        eval_steps=0,
        max_steps=3,
    )
    summary = train_model(str(tiny_bert), data, stsb_pairs("validation", 20), *config, tmp_path)
    assert summary["steps"] == 3 and summary["mixed_precision"] == "no"


class _Interrupt(TrainerCallback):
    """Stops training with an error right after step ``at`` (as a killed worker would)."""

    def __init__(self, at: int) -> None:
        self.at = at

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step == self.at:
            raise RuntimeError("interrupted")


class _CountSteps(TrainerCallback):
    def __init__(self) -> None:
        self.steps: list[int] = []

    def on_step_end(self, args, state, control, **kwargs):
        self.steps.append(state.global_step)


@pytest.mark.parametrize("loss", ["softmax", "mnr"])
def test_an_interrupted_run_resumes_from_its_last_checkpoint(tmp_path, tiny_bert, nli_sample, loss):
    data = pairs_for_loss(nli_sample, loss)
    config = recipe_and_runtime(loss=loss, batch_size=8, warmup_steps=1, eval_steps=0, max_steps=10, checkpoint_steps=3)
    sts = stsb_pairs("validation", 20)

    straight = train_model(str(tiny_bert), data, sts, *config, tmp_path / "straight")
    assert straight["resumed_from"] is None

    with pytest.raises(RuntimeError, match="interrupted"):
        train_model(str(tiny_bert), data, sts, *config, tmp_path / "resumed", callbacks=[_Interrupt(7)])
    checkpoint = tmp_path / "resumed" / "_trainer" / "checkpoint-6"
    assert checkpoint.is_dir()
    assert (checkpoint / LOSS_HEAD).exists() == (loss == "softmax")  # only SoftmaxLoss has its own weights
    (checkpoint.parent / "checkpoint-9").mkdir()  # as a kill while writing a checkpoint leaves one: unsealed

    counter = _CountSteps()
    resumed = train_model(str(tiny_bert), data, sts, *config, tmp_path / "resumed", callbacks=[counter])
    assert resumed["resumed_from"] == "checkpoint-6"  # the unsealed checkpoint-9 was not trusted
    assert resumed["steps"] == 10 and counter.steps == [7, 8, 9, 10]  # the step counter continued
    # same data order, same optimizer state and (for softmax) the same classifier head: same weights
    texts = ["a man is playing a guitar", "the cat sleeps"]
    after_straight = SentenceTransformer(str(tmp_path / "straight" / "model")).encode(texts)
    after_resume = SentenceTransformer(str(tmp_path / "resumed" / "model")).encode(texts)
    np.testing.assert_allclose(after_resume, after_straight, atol=1e-5)


def test_cadences_of_the_runtime_do_not_change_the_weights(tmp_path, tiny_bert, nli_sample):
    """Why checkpoint and evaluation cadence stay out of the model's key: the same weights with or without them."""
    data = soft_negatives(pairs_for_loss(nli_sample, "mnr"), nli_sample, MiningConfig())
    sts, texts = stsb_pairs("validation", 20), ["a man is playing a guitar", "the cat sleeps"]
    plain = recipe_and_runtime(loss="mnr", batch_size=8, warmup_steps=1, max_steps=6, eval_steps=0, checkpoint_steps=0)
    busy = (plain[0], replace(plain[1], eval_steps=2, checkpoint_steps=2))
    train_model(str(tiny_bert), data, sts, *plain, tmp_path / "plain")
    train_model(str(tiny_bert), data, sts, *busy, tmp_path / "busy")
    np.testing.assert_array_equal(
        SentenceTransformer(str(tmp_path / "busy" / "model")).encode(texts),
        SentenceTransformer(str(tmp_path / "plain" / "model")).encode(texts),
    )


def test_data_parallel_training_under_torchrun_on_cpu(tmp_path, tiny_bert, nli_sample):
    from tasks.training.distributed import processes_for, train_distributed

    config = recipe_and_runtime(loss="cosine", batch_size=8, warmup_steps=1, eval_steps=0, max_steps=3, processes=2)
    assert processes_for(config[1]) == 2 and processes_for(TrainRuntime()) == 1  # no GPU here: one process
    summary = train_distributed(
        str(tiny_bert), pairs_for_loss(nli_sample, "cosine"), stsb_pairs("validation", 20), *config, tmp_path
    )
    assert summary["processes"] == 2 and summary["steps"] == 3
    assert SentenceTransformer(str(tmp_path / "model")).encode(["a test"]).shape == (1, 32)
    assert not (tmp_path / "_ddp").exists()


def test_two_processes_train_the_one_process_model(tmp_path, nli_sample):
    """batch_size is the global batch: two gloo processes take 6 rows each of the same 12-row batches, MNR
    gathers the embeddings across them, so steps and loss curve are those of one process (dropout off,
    so the two runs compute the same function; what is left is the order of sums). 84 rows: seven whole
    batches of 12 (an epoch's last, partial batch is evened out across processes by accelerate, with repeats)."""
    from bench.data import TINY_BERT, build_bert
    from tasks.training.distributed import train_distributed

    bert = build_bert(tmp_path, TINY_BERT | {"hidden_dropout_prob": 0.0, "attention_probs_dropout_prob": 0.0}, 64)
    data = soft_negatives(pairs_for_loss(nli_sample, "mnr"), nli_sample, MiningConfig()).head(84)
    assert len(data) == 84
    sts = stsb_pairs("validation", 20)
    settings = dict(loss="mnr", batch_size=12, warmup_steps=1, max_steps=7, eval_steps=1, checkpoint_steps=0)
    one = train_model(str(bert), data, sts, *recipe_and_runtime(**settings), tmp_path / "one")
    two = train_distributed(str(bert), data, sts, *recipe_and_runtime(**settings, processes=2), tmp_path / "two")
    assert (one["processes"], two["processes"]) == (1, 2)
    assert one["steps"] == two["steps"] == 7 and two["per_device_batch"] == 6
    curve = [[e["loss"] for e in run["log_history"] if "loss" in e] for run in (one, two)]
    assert len(curve[0]) == len(curve[1]) == 7
    np.testing.assert_allclose(curve[1], curve[0], rtol=1e-4)  # measured: within 1e-6 here
    with pytest.raises(ValueError, match="batch_size: 15 is the global batch"):
        train_distributed(str(bert), data, sts, *recipe_and_runtime(**settings | {"batch_size": 15}, processes=2),
                          tmp_path / "odd")  # fmt: skip


@pytest.mark.parametrize("mini_batch_size", [0, 4])
def test_gist_trains_with_a_guide_that_filters_in_batch_negatives(tmp_path, tiny_bert, nli_sample, mini_batch_size):
    """GISTEmbedLoss (cached for big batches) with a frozen guide; the guide's weights never move and
    are not saved with the loss head."""
    guide = tmp_path / "guide"
    SentenceTransformer(str(tiny_bert)).save(str(guide))
    guide_before = SentenceTransformer(str(guide)).encode(["a test"])
    config = recipe_and_runtime(
        loss="gist", batch_size=8, warmup_steps=1, eval_steps=0, max_steps=3, mini_batch_size=mini_batch_size
    )
    out = tmp_path / "out"
    config_with_checkpoint = (config[0], replace(config[1], checkpoint_steps=2))
    summary = train_model(
        str(tiny_bert),
        pairs_for_loss(nli_sample, "gist"),
        stsb_pairs("validation", 20),
        *config_with_checkpoint,
        out,
        guide_location=str(guide),
    )
    assert summary["steps"] == 3
    assert summary["loss_class"] == ("CachedGISTEmbedLoss" if mini_batch_size else "GISTEmbedLoss")
    assert summary["batches"] == "columns"  # GIST embeds each column, with the guide beside the model
    trained = SentenceTransformer(str(out / "model")).encode(["a test"])
    assert abs(trained - guide_before).max() > 0
    assert np.allclose(SentenceTransformer(str(guide)).encode(["a test"]), guide_before)
    with pytest.raises(ValueError, match="guide"):
        train_model(
            str(tiny_bert), pairs_for_loss(nli_sample, "gist"), stsb_pairs("validation", 20), *config, tmp_path / "x"
        )


@pytest.mark.parametrize("loss", ["mnr", "cosine"])
def test_matryoshka_wraps_the_loss_and_trains_every_dimension(tmp_path, tiny_bert, nli_sample, loss):
    data = pairs_for_loss(nli_sample, loss)
    config = recipe_and_runtime(
        loss=loss, batch_size=8, warmup_steps=1, eval_steps=0, max_steps=3, matryoshka_dims=(32, 16, 8)
    )
    summary = train_model(str(tiny_bert), data, stsb_pairs("validation", 20), *config, tmp_path)
    assert summary["loss_class"].endswith("in MatryoshkaLoss")
    assert summary["batches"] != "columns"  # our length-grouped chunks run inside MatryoshkaLoss
    assert summary["train_loss"] > 0


def test_matryoshka_dims_are_checked_with_the_parameter_name():
    with pytest.raises(ValueError, match="parameter matryoshka_dims: .*SoftmaxLoss"):
        TrainRecipe(loss="softmax", matryoshka_dims=(16,)).check()
    with pytest.raises(ValueError, match="parameter matryoshka_dims"):
        TrainRecipe(loss="mnr", matryoshka_dims=(16, 16)).check()
    with pytest.raises(ValueError, match="parameter matryoshka_dims"):
        TrainRecipe(loss="mnr", matryoshka_dims=(0,)).check()
    TrainRecipe(loss="mnr", matryoshka_dims=(384, 64)).check()
