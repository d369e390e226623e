"""Encoding texts with a model: its precision, and batches of similar token length.

sentence-transformers orders one ``encode`` call by characters, which pads MNLI, STS-B and
Banking77 batches to about 1.4x their real tokens. Mining and evaluation both encode here instead,
in batches ordered by token count (about 1.03x), one ``encode`` call per batch, longest first: the
same embeddings for fewer FLOPs.
"""

from __future__ import annotations

import contextlib
import weakref
from collections.abc import Callable, Iterator, Sequence

import numpy as np

from tasks.models.precision import Precision, runs_as
from tasks.models.resolve import ModelError, ResolvedModel

MINING_PRECISION = Precision.BF16  # mining encodes in half precision on a GPU (twice the speed), bf16 where it can


def encoding_batch_size(device: str | None = None) -> int:
    """Texts per encoding batch: 64 on the CPU (what the anchors and benchmarks were measured with), 512 on
    a GPU, where batches of 64 short texts leave the card mostly idle."""
    import torch

    return 512 if (device or "cuda").startswith("cuda") and torch.cuda.is_available() else 64


def load_model(model: ResolvedModel, device: str | None = None, precision: str | Precision = MINING_PRECISION):
    """A SentenceTransformer for the resolved model, its weights cast to what ``precision`` runs as on the
    device it loaded on (``runs_as``: the CPU keeps fp32). Evaluation asks for fp32 by default, so that the
    anchors (STS-B test 0.8203, Banking77 0.8004 for the bundled MiniLM) hold on every device. Remote code
    is never trusted."""
    from sentence_transformers import SentenceTransformer

    try:
        loaded = SentenceTransformer(model.location, device=device, trust_remote_code=False)
    except Exception as exc:
        raise ModelError(f"model {model.name!r} at {model.location}: cannot be loaded: {exc}") from exc
    dtype = runs_as(precision, str(loaded.device)).dtype
    return loaded if dtype is None else loaded.to(dtype)


@contextlib.contextmanager
def encoding_pool(model) -> Iterator[dict | None]:
    """sentence-transformers' multi-process pool over every GPU when there are several, else None: mining
    and evaluation then encode on all of them at once (a run's cluster: ``cluster.encoding.encoding_pool``)."""
    import torch

    if torch.cuda.device_count() < 2 or str(model.device) == "cpu":  # exports and CPU models: this process
        yield None
        return
    device = model.device  # starting a pool moves the model to the CPU, and stopping it does not move it back
    pool = model.start_multi_process_pool([f"cuda:{i}" for i in range(torch.cuda.device_count())])
    try:
        yield pool
    finally:
        model.stop_multi_process_pool(pool)
        model.to(device)


_counters: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # a fast tokenizer → its counting copy


def _counter(tokenizer):
    """A copy of a fast tokenizer's Rust backend without truncation or padding (the tokenizer's own keeps its
    last call's settings), made once per tokenizer: a copy costs 25 ms, and encoding counts shard by shard."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None:
        return None
    if tokenizer not in _counters:
        from tokenizers import Tokenizer

        counter = Tokenizer.from_str(backend.to_str())
        counter.no_truncation()
        counter.no_padding()
        _counters[tokenizer] = counter
    return _counters[tokenizer]


def text_token_lengths(encoder, texts: Sequence[str]) -> list[int]:
    """Tokens per text as the encoder will see them (truncated); characters if it has no tokenizer. A fast
    tokenizer's Rust backend is asked directly, without offsets or Python lists of ids: on 40,000 texts a third
    of the time."""
    tokenizer = getattr(encoder, "tokenizer", None)
    if tokenizer is None:
        return [len(t) for t in texts]
    if not callable(tokenizer):  # a bare tokenizers.Tokenizer (a static embedding model)
        return [len(e.ids) for e in tokenizer.encode_batch(list(texts), add_special_tokens=False)]
    limit = encoder.max_seq_length or None
    backend = _counter(tokenizer)
    lengths: list[int] = []
    for start in range(0, len(texts), 10_000):  # in slices, so a large corpus never holds all its token ids
        chunk = list(texts[start : start + 10_000])
        if backend is not None:  # truncation keeps the special tokens: min(length, limit) is what the model sees
            found = [len(e) for e in backend.encode_batch_fast(chunk, add_special_tokens=True)]
            lengths += found if limit is None else [min(n, limit) for n in found]
            continue
        ids = tokenizer(chunk, truncation=limit is not None, max_length=limit)
        lengths += [len(i) for i in ids["input_ids"]]
    return lengths


def batches_by_length(texts: Sequence[str], lengths: Sequence[int], batch_size: int) -> list[list[int]]:
    """Positions of ``texts`` in batches of similar token length, longest first (so later batches reuse
    the first one's memory)."""
    order = sorted(range(len(texts)), key=lambda i: -lengths[i])
    return [order[i : i + batch_size] for i in range(0, len(order), batch_size)]


def encode_in_token_order(
    model,
    texts: Sequence[str],
    batch_size: int,
    bar=None,
    encode: Callable | None = None,
    pool=None,
    function: str = "encode",
    **kwargs,
) -> np.ndarray:
    """Embeddings of ``texts`` (in their order), computed in batches of similar token length.

    One ``encode`` call per batch: given the whole list, sentence-transformers would re-order it by
    characters. ``encode`` replaces ``model.encode`` (mteb's wrapper); ``bar.update(n)`` is told after
    each batch. With a ``pool`` (``encoding_pool``), the texts go to its processes in token order, a
    chunk of batches each; to a cluster, the batches as they are, and the workers call the model's
    ``function`` (mteb's wrapper: ``encode_query``/``encode_document``) on each.
    """
    encode = encode or model.encode
    out: list[np.ndarray | None] = [None] * len(texts)
    batches = batches_by_length(texts, text_token_lengths(model, texts), batch_size)
    if hasattr(pool, "map_shards"):  # the run's cluster: the same batches, encoded on its workers
        order = [i for batch in batches for i in batch]
        vectors = pool.encode([[texts[i] for i in batch] for batch in batches], bar, function, **kwargs)
        return vectors[np.argsort(order)] if len(order) else np.zeros((0, 0), dtype=np.float32)
    if pool is not None:
        order = [i for batch in batches for i in batch]
        vectors = encode(
            [texts[i] for i in order], **kwargs | {"batch_size": batch_size, "pool": pool, "chunk_size": 8 * batch_size}
        )
        vectors = vectors.float().cpu().numpy() if hasattr(vectors, "cpu") else np.asarray(vectors)
        if bar is not None:
            bar.update(len(order))
        return vectors[np.argsort(order)] if len(order) else np.zeros((0, 0), dtype=np.float32)
    for batch in batches:
        vectors = encode([texts[i] for i in batch], **kwargs | {"batch_size": len(batch), "show_progress_bar": False})
        vectors = vectors.float().cpu().numpy() if hasattr(vectors, "cpu") else np.asarray(vectors)
        for i, vector in zip(batch, vectors):
            out[i] = vector
        if bar is not None:
            bar.update(len(batch))
    return np.stack(out) if out else np.zeros((0, 0), dtype=np.float32)
