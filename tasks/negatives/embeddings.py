"""Encode texts with a cache keyed by the model's fingerprint and the text's hash.

MNLI premises repeat and re-mining with other settings re-uses the same texts, so each
distinct text is encoded once per model and kept as Parquet shards under
``artifacts/embeddings/<model fingerprint>/``. Mining trusts these vectors blindly, so each shard has a
sidecar ``<shard>.sha256`` (``sha256sum -c`` reads it) and is read only when its bytes match: a damaged,
truncated or unchecked shard is set aside with a warning and its texts are encoded again.

Runs append shards to one store concurrently: every shard has a fresh name, and its sidecar is renamed
into place before the shard is, so a visible shard always has its checksum and a shard without one was
written before checksums existed. Those are re-encoded, not adopted: their bytes cannot be checked, and a
flip in one changed mined negatives silently (re-encoding is a one-off cost, the cache's only job).
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from tqdm.auto import tqdm

from tasks.models.encoding import (
    MINING_PRECISION,
    batches_by_length,
    encoding_batch_size,
    encoding_pool,
    load_model,
    text_token_lengths,
)
from tasks.models.precision import Precision, runs_as
from tasks.models.resolve import ResolvedModel
from tasks.store import transfer
from tasks.store.artifacts import artifacts_root, atomic_write_text

log = logging.getLogger(__name__)

SHARDS = "shard-*.parquet"
CHECKSUM = ".sha256"  # sidecar suffix: ``shard-<id>.parquet.sha256``
DAMAGED = ".damaged-"  # prefix of a shard set aside (kept to look at; no glob of the store matches it)


def text_hash(text: str) -> str:
    return hashlib.sha1(text.encode("utf-8")).hexdigest()


def _store(data_dir: str | Path, model: ResolvedModel) -> Path:
    """One store per model and precision: half-precision vectors from a GPU never mix with fp32 ones."""
    precision = runs_as(MINING_PRECISION)
    name = model.fingerprint if precision is Precision.FP32 else f"{model.fingerprint}-{precision.value}"
    return artifacts_root(data_dir) / "embeddings" / name


def sidecar(shard: Path) -> Path:
    return shard.with_name(shard.name + CHECKSUM)


def _drop_unchecked(shard: Path) -> None:
    """A shard from before checksums: removed, not adopted (it is only a copy, and its bytes cannot be checked)."""
    log.warning("embedding shard %s has no checksum (written before checksums): encoding its texts again", shard)
    with contextlib.suppress(FileNotFoundError):
        shard.unlink()


def _set_aside(shard: Path, why: str) -> None:
    """Never read a damaged shard again, but keep it to look at (renamed out of the store's glob). Another run
    may have set it aside first."""
    aside = shard.with_name(DAMAGED + shard.name)
    log.warning("embedding shard %s %s: set aside as %s, encoding its texts again", shard, why, aside.name)
    with contextlib.suppress(FileNotFoundError):
        os.replace(shard, aside)
    with contextlib.suppress(FileNotFoundError):
        sidecar(shard).unlink()


def _checked_table(shard: Path) -> pa.Table | None:
    """The shard's table if its bytes match its sidecar and parse; None otherwise (set aside, or gone:
    another run set it aside between our glob and our read). The bytes are read once, hashed, then parsed."""
    try:
        data = shard.read_bytes()
    except FileNotFoundError:
        return None
    try:
        expected = sidecar(shard).read_text().split()[0]
    except FileNotFoundError:
        _drop_unchecked(shard)
        return None
    except (OSError, IndexError, UnicodeDecodeError):
        expected = "unreadable"
    if hashlib.sha256(data).hexdigest() != expected:
        _set_aside(shard, f"does not match its checksum ({len(data)} bytes)")
        return None
    try:
        return pq.read_table(pa.BufferReader(data))
    except (pa.ArrowException, OSError) as exc:  # matching bytes that do not parse: a writer's bug, never trusted
        _set_aside(shard, f"does not parse ({exc})")
        return None


def _read_store(store: Path) -> tuple[dict[str, int], np.ndarray | None]:
    """Text hash → row, and the vectors, of every shard that passes its check. On a URL store, the shards of this
    store (one model, one precision) that the mirror lacks are pulled first, with their checksums."""
    transfer.pull_folder(store, f"{SHARDS}{CHECKSUM}")
    transfer.pull_folder(store, SHARDS)
    index: dict[str, int] = {}
    blocks = []
    offset = 0
    for shard in sorted(store.glob(SHARDS)):
        table = _checked_table(shard)
        if table is None:
            continue
        vectors = np.asarray(table.column("vector").combine_chunks().values, dtype=np.float32)
        dim = table.schema.field("vector").type.list_size
        blocks.append(vectors.reshape(-1, dim))
        for i, h in enumerate(table.column("text_hash").to_pylist()):
            index.setdefault(h, offset + i)
        offset += len(blocks[-1])
    return index, (np.concatenate(blocks) if blocks else None)


def _write_shard(store: Path, hashes: list[str], vectors: np.ndarray) -> None:
    """Hash the bytes as written, put the sidecar in place, then rename the shard in: the rename publishes."""
    store.mkdir(parents=True, exist_ok=True)
    flat = pa.array(vectors.astype(np.float32).ravel())
    table = pa.table(
        {"text_hash": hashes, "vector": pa.FixedSizeListArray.from_arrays(flat, vectors.shape[1])},
    )
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink)
    data = sink.getvalue().to_pybytes()
    name = f"shard-{uuid.uuid4().hex}.parquet"
    tmp = store / f".tmp-{name}"
    tmp.write_bytes(data)
    atomic_write_text(sidecar(store / name), f"{hashlib.sha256(data).hexdigest()}  {name}\n")
    os.replace(tmp, store / name)
    transfer.push_files([sidecar(store / name), store / name])  # a shard in the store always has its checksum


def _encode_shard(encoder, texts: list[str], batches: list[list[int]], bar, pool) -> np.ndarray:
    """One ``encode`` call per batch (given a longer list, it would re-order it by characters), or the whole
    shard, in token order, to the pool's processes."""
    if pool is not None:
        ordered = [texts[i] for batch in batches for i in batch]
        size = max(len(b) for b in batches)
        vectors = encoder.encode(ordered, batch_size=size, normalize_embeddings=True, pool=pool, chunk_size=8 * size)
        bar.update(len(ordered))
        return np.asarray(vectors)
    out = []
    for batch in batches:
        out.append(
            encoder.encode(
                [texts[i] for i in batch],
                batch_size=len(batch),
                normalize_embeddings=True,
                convert_to_numpy=True,
                show_progress_bar=False,
            )
        )
        bar.update(len(batch))
    return np.concatenate(out)


def encode_cached(
    data_dir: str | Path,
    model: ResolvedModel,
    texts: Sequence[str],
    batch_size: int | None = None,
    progress: Callable[[float], None] | None = None,
    chunk: int = 4096,
) -> tuple[np.ndarray, int]:
    """Normalised embeddings for ``texts`` (in order) and how many distinct texts were encoded now.

    New texts are encoded in batches of similar token length (``batch_size``: sized to the device when
    None), on every GPU at once when there are several, and written as a shard every ``chunk`` texts, so
    an interrupted run keeps what it encoded and ``progress(fraction)`` can report as it goes.
    """
    store = _store(data_dir, model)
    index, matrix = _read_store(store)
    hashes = [text_hash(t) for t in texts]
    missing = {h: t for h, t in zip(hashes, texts) if h not in index}
    if missing:
        encoder = load_model(model)
        batch_size = batch_size or encoding_batch_size(str(encoder.device))
        todo_hashes, todo = list(missing), list(missing.values())
        batches = batches_by_length(todo, text_token_lengths(encoder, todo), batch_size)
        per_shard = max(1, chunk // batch_size)
        with tqdm(total=len(todo), desc="encoding", unit="text") as bar, encoding_pool(encoder) as pool:
            for first in range(0, len(batches), per_shard):
                shard = batches[first : first + per_shard]
                fresh = _encode_shard(encoder, todo, shard, bar, pool)
                _write_shard(store, [todo_hashes[i] for batch in shard for i in batch], fresh)
                if progress:
                    progress(bar.n / len(todo))
        index, matrix = _read_store(store)
    absent = [h for h in hashes if h not in index]
    if absent:  # only if a shard written just now failed its check: the disk is failing
        raise RuntimeError(f"embedding store {store} lost {len(absent)} vectors just written; see the warnings")
    assert matrix is not None
    return matrix[[index[h] for h in hashes]], len(missing)
