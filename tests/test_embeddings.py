"""The embedding cache: each distinct text encoded once per model."""

from __future__ import annotations

import numpy as np

from tasks.embeddings import encode_cached
from tasks.models import resolve_model


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
