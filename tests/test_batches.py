"""Token ids and the batches built from them: same ids as the model's own preprocessing, same loss and
gradients as the stock collator and loss, little padding, flattened positions as the model's own, and ids
from another tokenizer refused."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from sentence_transformers import SentenceTransformer
from sentence_transformers.base.data_collator import BaseDataCollator

from tasks.evaluation.data import stsb_pairs
from tasks.models.resolve import bundled_minilm_dir
from tasks.negatives.strategies import MiningConfig, soft_negatives
from tasks.pairs.labels import pairs_for_loss
from tasks.pairs.sources import DEFAULT_NLI_SAMPLE
from tasks.training import batches, tokens
from tasks.training.losses import GroupedForwardLoss, build_loss
from tasks.training.recipe import recipe_and_runtime
from tasks.training.trainer import train_model


@pytest.fixture(scope="module")
def minilm() -> SentenceTransformer:
    return SentenceTransformer(str(bundled_minilm_dir()))


@pytest.fixture(scope="module")
def bundled_triplets() -> pd.DataFrame:
    raw = pd.read_parquet(DEFAULT_NLI_SAMPLE)[["premise", "hypothesis", "label"]]
    return soft_negatives(pairs_for_loss(raw, "mnr"), raw, MiningConfig())


def _data(frame: pd.DataFrame, loss: str, model) -> tokens.TokenizedData:
    return tokens.TokenizedData(tokens.tokenize_frame(frame, loss, model), tokens.tokenizer_spec(model))


def test_ids_are_what_the_model_preprocess_makes(minilm, nli_sample):
    triplets = soft_negatives(pairs_for_loss(nli_sample, "mnr"), nli_sample, MiningConfig())
    table = tokens.tokenize_frame(triplets, "mnr", minilm, chunk=7)  # small chunks: the stitching is tested too
    assert table.column_names == ["anchor_input_ids", "positive_input_ids", "negative_input_ids"]
    assert table.num_rows == len(triplets)
    for column in ("anchor", "positive", "negative"):
        expected = minilm.preprocess(triplets[column].tolist())
        for row, (ids, mask) in enumerate(zip(expected["input_ids"], expected["attention_mask"])):
            assert table.column(f"{column}_input_ids")[row].as_py() == ids[mask.bool()].tolist()


def test_labels_and_scores_travel_with_the_ids(minilm, nli_sample):
    softmax = tokens.tokenize_frame(pairs_for_loss(nli_sample, "softmax"), "softmax", minilm)
    assert softmax.column_names == ["premise_input_ids", "hypothesis_input_ids", "label"]
    assert softmax.column("label").to_pylist() == nli_sample["label"].tolist()
    cosine = tokens.tokenize_frame(pairs_for_loss(nli_sample, "cosine"), "cosine", minilm)
    assert cosine.column("score").to_pylist() == (nli_sample["label"] == 0).astype(float).tolist()


def _cost(lengths: np.ndarray, chunks: list[np.ndarray], overhead: int) -> float:
    return sum(len(c) * lengths[c].max() + overhead for c in chunks)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(1, 128), min_size=1, max_size=300), st.sampled_from([0, 64, 2048]))
def test_chunk_plans_cover_each_text_once_and_never_cost_more_than_one_padded_chunk(lengths, overhead):
    lengths = np.array(lengths)
    chunks = batches.plan_chunks(lengths, overhead)
    assert sorted(np.concatenate(chunks).tolist()) == list(range(len(lengths)))
    assert _cost(lengths, chunks, overhead) <= len(lengths) * lengths.max() + overhead
    for longer, shorter in zip(chunks, chunks[1:]):  # chunks run from long texts to short ones
        assert lengths[longer].min() >= lengths[shorter].max()


def test_padding_of_the_bundled_triplets_at_batch_256(minilm, bundled_triplets):
    """The issue's target, measured on the batches the GPU path builds without flash attention."""
    data = _data(bundled_triplets, "mnr", minilm)
    grouped = batches.build_collator(minilm, data, unpad=True, device="cuda")
    per_column = batches.build_collator(minilm, data, unpad=False, device="cuda")
    assert (grouped.layout, per_column.layout) == (batches.Layout.GROUPED, batches.Layout.COLUMNS)
    grouped_ratio = batches.padding_profile(grouped, len(data), 256, seed=0)
    column_ratio = batches.padding_profile(per_column, len(data), 256, seed=0)
    assert grouped_ratio <= 1.15
    assert column_ratio > 1.5 * grouped_ratio  # what each column padded on its own costs


def _stock_and_ours(model, frame: pd.DataFrame, loss_name: str):
    """Loss and gradients for one batch: the stock collator and loss, then ours, from the same weights."""
    results = []
    data = _data(frame, loss_name, model)
    for ours in (False, True):
        model.zero_grad()
        torch.manual_seed(0)
        loss = build_loss(model, loss_name)
        if ours:
            collator = batches.build_collator(model, data, unpad=True, device="cpu")
            collator.overhead = 0  # as many chunks as distinct lengths: the regrouping is exercised hard
            batch = collator(list(range(len(frame))))
            loss = GroupedForwardLoss(loss, len(data.columns))
        else:
            batch = BaseDataCollator(preprocess_fn=model.preprocess)(frame.to_dict("records"))
        from sentence_transformers import SentenceTransformerTrainer

        features, labels = SentenceTransformerTrainer.collect_features(None, batch)
        value = loss(features, labels)
        value.backward()
        grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
        results.append((value.item(), grads))
    return results


@pytest.mark.parametrize("loss_name", ["mnr", "cosine", "softmax"])
def test_grouped_batches_give_the_stock_loss_and_gradients(tiny_bert, nli_sample, loss_name):
    model = SentenceTransformer(str(tiny_bert))
    model.eval()  # no dropout: both paths must compute the same function
    frame = pairs_for_loss(nli_sample.head(48), loss_name)
    if loss_name == "mnr":
        frame = soft_negatives(frame, nli_sample, MiningConfig())[["anchor", "positive", "negative"]]
    (stock, stock_grads), (ours, our_grads) = _stock_and_ours(model, frame, loss_name)
    assert ours == pytest.approx(stock, rel=1e-5)
    assert stock_grads.keys() == our_grads.keys() and stock_grads
    for name, grad in stock_grads.items():  # relative error of each whole gradient: sums in another order
        assert (our_grads[name] - grad).norm() <= 1e-4 * grad.norm() + 1e-7, name


def test_per_column_batches_equal_the_stock_collator(tiny_bert, nli_sample):
    model = SentenceTransformer(str(tiny_bert))
    frame = pairs_for_loss(nli_sample.head(40), "cosine")
    ours = batches.build_collator(model, _data(frame, "cosine", model), False, "cpu")(list(range(40)))
    stock = BaseDataCollator(preprocess_fn=model.preprocess)(frame.to_dict("records"))
    for key in ("sentence1_input_ids", "sentence1_attention_mask", "sentence2_input_ids", "label"):
        torch.testing.assert_close(ours[key], stock[key], msg=key)


def test_flattened_batches_mark_where_each_text_starts(tiny_bert, nli_sample):
    from transformers import DataCollatorWithFlattening

    model = SentenceTransformer(str(tiny_bert))
    frame = pairs_for_loss(nli_sample.head(10), "mnr")
    data = _data(frame, "mnr", model)
    collator = batches.build_collator(model, data, True, "cpu")
    collator.layout = batches.Layout.FLATTENED
    collator.flattener = DataCollatorWithFlattening(return_flash_attn_kwargs=True)
    batch = collator(list(range(len(frame))))
    lengths = np.concatenate([tokens.ids_lengths(data.table)[f"{c}_input_ids"] for c in ("anchor", "positive")])
    assert batch["chunk0_input_ids"].shape == (1, lengths.sum())
    assert batch["chunk0_cu_seq_lens_q"].tolist() == [0, *np.cumsum(lengths).tolist()]
    starts = batch["chunk0_cu_seq_lens_q"][:-1]
    assert (batch["chunk0_position_ids"][0, starts] == 0).all()
    assert batch["chunk0_restore"].tolist() == list(range(len(lengths)))
    assert batches.padding_profile(collator, len(data), 4, seed=0) == 1.0


def test_training_refuses_ids_made_for_another_tokenizer_or_length(tiny_bert, nli_sample, minilm, tmp_path):
    frame = pairs_for_loss(nli_sample.head(32), "mnr")
    made_by_tiny = _data(frame, "mnr", SentenceTransformer(str(tiny_bert)))  # max_seq_length 64
    config = recipe_and_runtime(batch_size=8, max_steps=1, eval_steps=0, checkpoint_steps=0)
    with pytest.raises(tokens.TokenMismatch, match="max_seq_length 64 \\(the model's is 256\\)"):
        train_model(str(bundled_minilm_dir()), made_by_tiny, stsb_pairs("validation", 8), *config, tmp_path)
    other = tokens.TokenizerSpec("0123456789abcdef", 64, made_by_tiny.spec.features)
    with pytest.raises(tokens.TokenMismatch, match="tokenizer 0123456789abcdef"):
        train_model(
            str(tiny_bert),
            tokens.TokenizedData(made_by_tiny.table, other),
            stsb_pairs("validation", 8),
            *config,
            tmp_path,
        )
    assert not (tmp_path / "model").exists()


def test_the_fingerprint_ignores_the_tokenizers_last_truncation(minilm):
    before = tokens.tokenizer_fingerprint(minilm.tokenizer)
    minilm.tokenizer(["some text"] * 2, truncation=True, max_length=5, padding=True)
    assert tokens.tokenizer_fingerprint(minilm.tokenizer) == before


def _tiny_roberta(folder) -> SentenceTransformer:
    """A 2-layer RoBERTa (positions from padding_idx + 1 = 2) over MiniLM's tokenizer, random weights."""
    from sentence_transformers.models import Pooling, Transformer
    from transformers import BertTokenizerFast, RobertaConfig, RobertaModel

    torch.manual_seed(0)
    tokenizer = BertTokenizerFast.from_pretrained(str(bundled_minilm_dir()))
    shape = {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2, "intermediate_size": 64}
    config = RobertaConfig(vocab_size=tokenizer.vocab_size, max_position_embeddings=130, pad_token_id=1, **shape)
    RobertaModel(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    transformer = Transformer(str(folder), max_seq_length=64)
    return SentenceTransformer(modules=[transformer, Pooling(transformer.get_embedding_dimension(), "mean")])


def _flattening_as_under_flash_attention(model) -> None:
    """What sentence-transformers sets up on a model loaded with flash attention (not installed here): the
    first module flattens its texts with transformers' flattener, positions shifted as the model needs."""
    from transformers import DataCollatorWithFlattening

    first = model[0]
    first.data_collator = DataCollatorWithFlattening(
        return_seq_idx=True, return_flash_attn_kwargs=True, return_position_ids=True
    )
    first._flatten_position_offset = first._infer_flatten_position_offset()  # as sentence-transformers does
    first.can_flatten_inputs = True


@pytest.mark.parametrize("architecture, first_position", [("bert", 0), ("roberta", 2)])
def test_flattened_positions_are_the_models_own(tiny_bert, nli_sample, tmp_path, architecture, first_position):
    """A flattened batch carries the positions the model's own flattened preprocessing gives the same texts:
    from 0 for BERT, from padding_idx + 1 for RoBERTa-like models."""
    model = SentenceTransformer(str(tiny_bert)) if architecture == "bert" else _tiny_roberta(tmp_path / "roberta")
    frame = pairs_for_loss(nli_sample.head(12), "mnr")
    data = _data(frame, "mnr", model)  # ids are made padded, before the model flattens
    _flattening_as_under_flash_attention(model)
    collator = batches.build_collator(model, data, True, "cuda")
    assert collator.layout is batches.Layout.FLATTENED and collator.position_offset == first_position
    ours = collator(list(range(len(frame))))
    own = model.preprocess([*frame["anchor"], *frame["positive"]])
    assert ours["chunk0_position_ids"][0, 0] == first_position
    for key in ("input_ids", "position_ids", "cu_seq_lens_q", "seq_idx"):
        assert torch.equal(ours[f"chunk0_{key}"], own[key]), key


def test_the_position_shift_is_read_from_what_the_models_preprocess_makes(tiny_bert, nli_sample, monkeypatch):
    """Wherever the model's flattened batches get their shift from (here: not the private attribute the
    collator once read, with a silent default of 0), the collator's positions follow them."""
    model = SentenceTransformer(str(tiny_bert))
    frame = pairs_for_loss(nli_sample.head(8), "mnr")
    data = _data(frame, "mnr", model)
    _flattening_as_under_flash_attention(model)  # BERT: sentence-transformers' own shift is 0
    own = model.preprocess

    def shifted(texts, **kwargs):  # as a release that shifts positions somewhere else would
        out = own(texts, **kwargs)
        out["position_ids"] = out["position_ids"] + 2
        return out

    monkeypatch.setattr(model, "preprocess", shifted)
    collator = batches.build_collator(model, data, True, "cuda")
    assert collator.position_offset == 2
    expected = shifted([*frame["anchor"], *frame["positive"]])["position_ids"]
    assert torch.equal(collator(list(range(len(frame))))["chunk0_position_ids"], expected)


def test_a_model_that_says_it_flattens_but_pads_is_refused_loudly(tiny_bert, nli_sample):
    """A first module that says it flattens while its preprocess pads (sentence-transformers does so for
    query expansion): where the positions of a flattened batch start cannot be told, so no collator is built
    (it used to flatten anyway, positions from 0)."""
    model = SentenceTransformer(str(tiny_bert))
    data = _data(pairs_for_loss(nli_sample.head(8), "mnr"), "mnr", model)
    _flattening_as_under_flash_attention(model)
    model[0]._should_flatten_inputs = lambda *args, **kwargs: False
    with pytest.raises(ValueError, match="says it flattens its texts .* cannot be told"):
        batches.build_collator(model, data, True, "cuda")
