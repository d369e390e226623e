"""The embedding cache: each distinct text encoded once per model."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest
import torch

from tasks.models.encoding import batches_by_length, load_model, text_token_lengths
from tasks.models.precision import Precision
from tasks.models.resolve import resolve_model
from tasks.negatives import embeddings
from tasks.negatives.embeddings import _store, encode_cached
from tasks.store.cleanup import PRECISIONS


def test_cache_encodes_only_new_texts(tmp_path, tiny_bert):
    model = resolve_model(str(tiny_bert))
    first, encoded = encode_cached(tmp_path, model, ["a cat", "a dog", "a cat"])
    assert encoded == 2
    assert first.shape == (3, 32)
    np.testing.assert_allclose(np.linalg.norm(first, axis=1), 1.0, rtol=1e-5)
    np.testing.assert_array_equal(first[0], first[2])
    again, encoded = encode_cached(tmp_path, model, ["a dog", "a cat"])
    assert encoded == 0
    np.testing.assert_array_equal(again, first[[1, 0]])
    more, encoded = encode_cached(tmp_path, model, ["a cat", "a bird"])
    assert encoded == 1
    np.testing.assert_array_equal(more[0], first[0])


def test_cache_is_per_model(tmp_path, tiny_bert):
    tiny = resolve_model(str(tiny_bert))
    minilm = resolve_model("sentence-transformers/all-MiniLM-L6-v2")
    encode_cached(tmp_path, tiny, ["a cat"])
    vectors, encoded = encode_cached(tmp_path, minilm, ["a cat"])
    assert encoded == 1 and vectors.shape == (1, 384)


def test_batches_follow_token_length_and_cover_every_text():
    texts = ["a", "bb", "ccc", "dddd", "e"]
    lengths = [5, 1, 9, 3, 5]
    batches = batches_by_length(texts, lengths, batch_size=2)
    assert [len(b) for b in batches] == [2, 2, 1]
    flat = [i for b in batches for i in b]
    assert sorted(flat) == list(range(len(texts)))
    assert [lengths[i] for i in flat] == sorted(lengths, reverse=True)


def test_length_batched_vectors_match_plain_encoding_in_input_order(tmp_path):
    """Batching by token length must not change which vector belongs to which text."""
    model = resolve_model("sentence-transformers/all-MiniLM-L6-v2")
    texts = [
        "A man is playing a guitar on a crowded street corner while people walk past.",
        "Dogs run.",
        "The committee postponed its decision until the financial report was published next spring.",
        "Rain.",
        "Two children are building a sandcastle at the beach.",
    ]
    ours, _ = encode_cached(tmp_path, model, texts, batch_size=2)
    plain = load_model(model).encode(texts, normalize_embeddings=True, convert_to_numpy=True)
    np.testing.assert_allclose(ours, plain, atol=1e-5)
    assert text_token_lengths(load_model(model), texts)[3] < text_token_lengths(load_model(model), texts)[2]


@pytest.mark.parametrize("cuda, bf16, suffix", [(False, False, ""), (True, True, "-bf16"), (True, False, "-fp16")])
def test_vectors_of_each_precision_have_a_store_of_their_own(tmp_path, tiny_bert, monkeypatch, cuda, bf16, suffix):
    """The CPU's fp32 vectors under the model's fingerprint, a GPU's half ones under ``-bf16`` or ``-fp16``,
    the suffixes gc knows (tasks/store/cleanup.py cannot import the precision, it sits below models)."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: cuda)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: bf16)
    model = resolve_model(str(tiny_bert))
    assert _store(tmp_path, model).name == model.fingerprint + suffix
    assert set(PRECISIONS) == {p.value for p in Precision if p.dtype is not None}


def test_each_shard_has_its_checksum_beside_it_in_place_before_the_shard(tmp_path, tiny_bert, monkeypatch):
    """The sidecar reads as ``sha256sum -c`` expects, and is renamed in before the shard: a run listing the
    store never sees a new shard without its checksum (so one without is from before checksums)."""
    model = resolve_model(str(tiny_bert))
    published = []
    real_replace = embeddings.os.replace

    def replace(src, dst):
        if Path(dst).name.startswith("shard-") and Path(dst).suffix == ".parquet":
            published.append(embeddings.sidecar(Path(dst)).exists())
        real_replace(src, dst)

    monkeypatch.setattr(embeddings.os, "replace", replace)
    encode_cached(tmp_path, model, ["a cat", "a dog", "a bird"], batch_size=1, chunk=1)
    assert published == [True, True, True]
    store = _store(tmp_path, model)
    for shard in store.glob("shard-*.parquet"):
        digest, name = embeddings.sidecar(shard).read_text().split()
        assert name == shard.name and digest == hashlib.sha256(shard.read_bytes()).hexdigest()
    assert sorted(p.name for p in store.iterdir() if p.name.startswith(".")) == []  # no temporary left


def test_a_shard_set_aside_by_another_run_meanwhile_is_only_missing(tmp_path, tiny_bert, monkeypatch):
    """Between this run's listing and its read, another run may set a damaged shard aside: not an error."""
    model = resolve_model(str(tiny_bert))
    first, _ = encode_cached(tmp_path, model, ["a cat", "a dog"])
    shard = next(_store(tmp_path, model).glob("shard-*.parquet"))
    real_glob, stale = Path.glob, [[shard]]  # this run's first listing, taken before the other run acted

    def glob(self, pattern):
        return stale.pop() if pattern == embeddings.SHARDS and stale else real_glob(self, pattern)

    monkeypatch.setattr(Path, "glob", glob)
    shard.unlink()
    again, encoded = encode_cached(tmp_path, model, ["a cat", "a dog"])
    assert encoded == 2
    np.testing.assert_allclose(again, first, atol=1e-6)


def test_a_run_reads_only_the_shards_holding_its_texts(tmp_path, tiny_bert, monkeypatch):
    """A cache shared by many runs grows without bound; a run's memory must not: from each shard only its hash
    column is read, and only the shards holding wanted texts are read whole (and checked), only their rows kept."""
    model = resolve_model(str(tiny_bert))
    corpus = [f"text number {i}" for i in range(40)]
    _, encoded = encode_cached(tmp_path, model, corpus, batch_size=4, chunk=8)  # 5 shards of 8 texts
    assert encoded == 40 and len(list(_store(tmp_path, model).glob("shard-*.parquet"))) == 5
    read_whole = []
    checked = embeddings._checked_table
    monkeypatch.setattr(embeddings, "_checked_table", lambda shard: read_whole.append(shard) or checked(shard))
    index, matrix = embeddings._cached(_store(tmp_path, model), [embeddings.text_hash(t) for t in corpus[:3]])
    assert len(read_whole) == 1  # the first three texts: one shard (the longest-first batches share one)
    assert matrix.shape == (3, 32) and len(index) == 3
    vectors, encoded = encode_cached(tmp_path, model, corpus[:3])
    assert encoded == 0
    np.testing.assert_array_equal(vectors, matrix[[index[embeddings.text_hash(t)] for t in corpus[:3]]])


def test_a_text_held_by_several_shards_is_served_once(tmp_path, tiny_bert):
    """Concurrent runs may each write a text (and one shard may hold it twice): the first row found serves it, a
    shard whose wanted texts were all served already is not read whole, and the vectors stay in ``texts``' order."""
    model = resolve_model(str(tiny_bert))
    texts = ["a cat", "a dog", "a bird"]
    vectors, _ = encode_cached(tmp_path, model, texts)
    store = _store(tmp_path, model)
    hashes = [embeddings.text_hash(t) for t in texts]
    embeddings._write_shard(store, [hashes[1], hashes[1], hashes[0]], vectors[[1, 1, 0]])  # a second writer's shard
    index, matrix = embeddings._cached(store, [hashes[0], hashes[1], hashes[2], hashes[1]])
    assert sorted(index) == sorted(hashes) and matrix.shape == (3, vectors.shape[1])
    np.testing.assert_allclose(matrix[[index[h] for h in hashes]], vectors, atol=1e-6)
    again, encoded = encode_cached(tmp_path, model, [texts[2], texts[1], texts[2]])
    assert encoded == 0
    np.testing.assert_allclose(again, vectors[[2, 1, 2]], atol=1e-6)


def test_token_lengths_are_the_ones_the_tokenizer_gives_the_model(tiny_bert):
    """Batches are formed by these lengths, so they must be the model's own: special tokens counted, truncated at
    ``max_seq_length``, whatever the tokenizer's last call left set on its backend."""
    encoder = load_model(resolve_model(str(tiny_bert)))
    texts = ["a cat", "", "   ", "naïve café ☕ 東京", "word " * 300, "a much longer sentence about a dog " * 3]
    for limit in (encoder.max_seq_length, 8):
        encoder.max_seq_length = limit
        encoder.tokenizer(["warm"], truncation=True, max_length=3, padding="max_length")  # leaves settings behind
        expected = [len(ids) for ids in encoder.tokenizer(texts, truncation=True, max_length=limit)["input_ids"]]
        assert text_token_lengths(encoder, texts) == expected
        assert max(expected) == limit
