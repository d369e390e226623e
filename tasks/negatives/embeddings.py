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
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from tqdm.auto import tqdm

from tasks.cluster.connection import current_cluster
from tasks.cluster.encoding import encode_batches, model_on_cluster
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


def _store(data_dir: str | Path, model: ResolvedModel, precision: Precision | None = None) -> Path:
    """One store per model and precision (as it runs here, unless given: a cluster's workers write where the
    run reads): half-precision vectors from a GPU never mix with fp32 ones."""
    precision = precision or runs_as(MINING_PRECISION)
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


def _cached(store: Path, wanted: Sequence[str]) -> tuple[dict[str, int], np.ndarray | None]:
    """Text hash → row, and the vectors, of the ``wanted`` texts the cache holds: memory grows with the work,
    not with the cache. Each shard's ``text_hash`` column is read first (a column read, not the vectors); only
    a shard holding wanted texts is read whole, checked against its sidecar, and its wanted rows taken. On a URL
    store, the shards of this store (one model, one precision) that the mirror lacks are pulled first."""
    transfer.pull_folder(store, f"{SHARDS}{CHECKSUM}")
    transfer.pull_folder(store, SHARDS)
    index: dict[str, int] = {}
    blocks: list[np.ndarray] = []
    wanted_set = set(wanted)  # one hash set for all shards (a set per shard, as pc.is_in builds, costs the work's size)

    def fresh(hashes: list[str]) -> list[int]:  # rows holding a wanted text no earlier shard served
        return [row for row, h in enumerate(hashes) if h in wanted_set and h not in index]

    for shard in sorted(store.glob(SHARDS)):
        if len(index) == len(wanted_set):
            break
        try:
            hits = fresh(pq.read_table(shard, columns=["text_hash"]).column(0).to_pylist())
        except (FileNotFoundError, pa.ArrowException, OSError):  # set aside by another run, or damaged
            hits = None
        if hits == []:
            continue
        table = _checked_table(shard)  # a shard whose hash column does not read is checked (and set aside) here
        if table is None:
            continue
        hashes = table.column("text_hash").to_pylist()
        rows = []  # the column's hits are the table's (same bytes); looked up only when the column did not read
        for row in fresh(hashes) if hits is None else hits:  # the first row holding a text serves it
            if hashes[row] not in index:
                index[hashes[row]] = len(index)
                rows.append(row)
        if rows:
            dim = table.schema.field("vector").type.list_size
            vectors = np.asarray(table.column("vector").combine_chunks().values, dtype=np.float32).reshape(-1, dim)
            blocks.append(vectors[rows])
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


def _encode_shard(encoder, texts: list[str], batches: list[list[int]], pool) -> np.ndarray:
    """One ``encode`` call per batch (given a longer list, it would re-order it by characters), or the whole
    shard, in token order, to the pool's processes."""
    if pool is not None:
        ordered = [texts[i] for batch in batches for i in batch]
        size = max(len(b) for b in batches)
        vectors = encoder.encode(ordered, batch_size=size, normalize_embeddings=True, pool=pool, chunk_size=8 * size)
        return np.asarray(vectors)
    return encode_batches(encoder, [[texts[i] for i in batch] for batch in batches], normalize_embeddings=True)


def _shard_batches(encoder, texts: list[str], batch_size: int) -> list[list[int]]:
    """A shard's texts in batches of similar token length, counted where the shard is encoded: no pass over
    every text before the first shard (on a cluster, the one step that would not spread over the workers)."""
    return batches_by_length(texts, text_token_lengths(encoder, texts), batch_size)


def _encode_and_cache(plugin: str, data_dir: str, model: dict, precision: str, batch_size: int,
                      hashes: list[str], texts: list[str]) -> int:  # fmt: skip
    """On a cluster worker: a shard of texts batched and encoded with the worker's model as one process would,
    and written by the worker straight into the embedding cache (the store, where it is shared), checksum first."""
    from tasks.cluster.encoding import worker_encoder

    encoder = worker_encoder(plugin)
    batches = _shard_batches(encoder, texts, batch_size)
    vectors = _encode_shard(encoder, texts, batches, pool=None)
    store = _store(data_dir, ResolvedModel(**model), Precision(precision))
    _write_shard(store, [hashes[i] for b in batches for i in b], vectors)
    return len(hashes)


def _encode_missing(store: Path, data_dir: str | Path, model: ResolvedModel, precision: Precision,
                    missing: dict[str, str], batch_size: int | None, progress: Callable[[float], None] | None,
                    chunk: int) -> None:  # fmt: skip
    """Encode the ``missing`` texts (hash → text) and write them to ``store`` a shard every ``chunk`` texts, each
    shard in batches of similar token length: in this process (on every local GPU at once when there are
    several), or on the run's cluster, shards of the same texts batched the same way."""
    cluster = current_cluster()
    todo_hashes, todo = list(missing), list(missing.values())
    starts = range(0, len(todo), chunk)
    with contextlib.ExitStack() as loaded, tqdm(total=len(todo), desc="encoding", unit="text") as bar:

        def done(_: int, count: int) -> None:
            bar.update(count)
            if progress:
                progress(bar.n / len(todo))

        if cluster is not None:
            remote = loaded.enter_context(model_on_cluster(cluster, model, precision))
            batch_size = batch_size or encoding_batch_size("cuda" if cluster.gpu_workers() else "cpu")
            work = [(str(data_dir), asdict(model), precision.value, batch_size, todo_hashes[s : s + chunk],
                     todo[s : s + chunk]) for s in starts]  # fmt: skip
            remote.map_shards(_encode_and_cache, work, done)
            return
        encoder = load_model(model, precision=precision)
        batch_size = batch_size or encoding_batch_size(str(encoder.device))
        with encoding_pool(encoder) as pool:
            for first in starts:
                texts = todo[first : first + chunk]
                batches = _shard_batches(encoder, texts, batch_size)
                fresh = _encode_shard(encoder, texts, batches, pool)
                _write_shard(store, [todo_hashes[first + i] for batch in batches for i in batch], fresh)
                done(first, len(texts))


def mining_precision() -> Precision:
    """What mining encodes in here: on the run's cluster, its workers' answer (a CPU flow may mine on GPU
    workers); it names the embedding store, and keys the index built from its vectors."""
    cluster = current_cluster()
    return Precision(cluster.runs_as(MINING_PRECISION)) if cluster else runs_as(MINING_PRECISION)


def encode_cached(
    data_dir: str | Path,
    model: ResolvedModel,
    texts: Sequence[str],
    batch_size: int | None = None,
    progress: Callable[[float], None] | None = None,
    chunk: int = 4096,
    precision: Precision | None = None,
) -> tuple[np.ndarray, int]:
    """Normalised embeddings for ``texts`` (in order) and how many distinct texts were encoded now.

    New texts are encoded in batches of similar token length (``batch_size``: sized to the device when
    None), on every GPU at once when there are several or on the run's cluster (``encode_cluster``), and
    written as a shard every ``chunk`` texts, so an interrupted run keeps what it encoded and
    ``progress(fraction)`` can report as it goes. Only the vectors of ``texts`` are read from the cache.
    ``precision``: mining's (``mining_precision``) unless given (evaluation's: fp32 by default).
    """
    precision = precision or mining_precision()
    store = _store(data_dir, model, precision)
    hashes = [text_hash(t) for t in texts]
    index, matrix = _cached(store, hashes)
    missing = {h: t for h, t in zip(hashes, texts) if h not in index}
    if missing:
        _encode_missing(store, data_dir, model, precision, missing, batch_size, progress, chunk)
        index, matrix = _cached(store, hashes)
    absent = [h for h in hashes if h not in index]
    if absent:  # only if a shard written just now failed its check: the disk is failing
        raise RuntimeError(f"embedding store {store} lost {len(absent)} vectors just written; see the warnings")
    assert matrix is not None
    return matrix[[index[h] for h in hashes]], len(missing)
