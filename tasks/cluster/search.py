"""FAISS search fanned out: the candidate index goes to every worker once (scattered, as bytes), and the queries
go in shards of whole batches. Each worker searches its shard batch by batch with the batch size one process
uses, so exact (flat) search returns exactly the single-process neighbours, and an IVF index the same ones at
the same nprobe, which its serialized bytes carry (its recall is measured as before)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from tasks.cluster.connection import Cluster

BATCHES_PER_SHARD = 16
_loaded: dict[str, object] = {}  # on a worker: the index by its scattered key, deserialized once per search


def _search_shard(key: str, serialized, queries: np.ndarray, k: int, batch_size: int):
    """On a worker: the shard's (scores, ids), searched in ``batch_size`` batches like one process."""
    import faiss

    index = _loaded.get(key)
    if index is None:
        _loaded.clear()  # one index at a time
        index = _loaded[key] = faiss.deserialize_index(serialized)
    found = [index.search(queries[s : s + batch_size], k) for s in range(0, len(queries), batch_size)]
    return np.concatenate([f[0] for f in found]), np.concatenate([f[1] for f in found])


def _forget() -> None:
    """On a worker: drop its index (a function, pickled by name: ``_loaded.clear`` would travel as a copy)."""
    _loaded.clear()


def search_on_cluster(
    cluster: Cluster, index: Any, queries: np.ndarray, k: int, batch_size: int
) -> Iterator[tuple[int, np.ndarray, np.ndarray]]:
    """(start row, scores, ids) per batch of queries, in order, searched on the cluster's workers (``index``: a
    ``negatives.index.SearchIndex``)."""
    from distributed import as_completed

    client = cluster.client
    shared = client.scatter(index.serialized(), broadcast=True, hash=False)
    step = batch_size * BATCHES_PER_SHARD
    starts = list(range(0, len(queries), step))
    futures = {
        client.submit(_search_shard, shared.key, shared, queries[s : s + step], k, batch_size, pure=False): s
        for s in starts
    }
    ready: dict[int, tuple[np.ndarray, np.ndarray]] = {}
    pending = iter(starts)
    upcoming = next(pending, None)
    try:
        with tqdm(total=len(queries), desc=f"FAISS {index.kind} on {cluster.spec.describe()}", unit="query") as bar:
            for future in as_completed(futures):
                ready[futures[future]] = future.result()
                future.release()
                while upcoming is not None and upcoming in ready:  # in order: the caller draws in order
                    scores, ids = ready.pop(upcoming)
                    for offset in range(0, len(ids), batch_size):
                        yield upcoming + offset, scores[offset : offset + batch_size], ids[offset : offset + batch_size]
                    bar.update(len(ids))
                    upcoming = next(pending, None)
    finally:
        left = [future for future in futures if not future.done()]  # an error, or the caller stopped early
        if left:
            client.cancel(left)
        shared.release()
        client.run(_forget)  # no worker keeps the candidates past the search
