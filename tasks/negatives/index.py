"""FAISS nearest-neighbour search over normalised vectors (inner product = cosine).

Exact (flat) search up to ``exact_limit`` candidates; above it an IVF index trained on a
sample, whose recall against exact search is measured on a query sample and reported. The IVF's lists hold
8-bit codes and its answers are re-ranked on the exact vectors (faiss's ``IVF<n>,SQ8,RFlat``): scanning
the lists is what an IVF search spends its time on, and on a CPU it waits on memory, so codes a quarter the
size search twice as fast (1M candidates: 7.1 s against 14.5 s for 20,000 queries), at the same recall (the
re-ranking puts the exact order and scores back).
Queries go in batches, so memory is O(batch × k), never N × N. GPU FAISS is used when the
installed faiss has GPU support and a GPU is present. The index is kept as an artifact (``indexes/<key>/``,
``write_index``/``read_index``): built once per miner, precision and source, and read by every mining run of
them, whatever its rank window or margins; ``faiss.read_index`` opens it outside the pipeline too.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import faiss
import numpy as np
from tqdm.auto import tqdm

from tasks.cluster.connection import current_cluster
from tasks.cluster.search import search_on_cluster

EXACT_LIMIT = 200_000
CALIBRATION_QUERIES = 200  # an IVF's nprobe is calibrated on this many queries


@dataclass
class SearchIndex:
    index: faiss.Index
    kind: str  # "flat", "ivf<nlist>,sq8,rflat,nprobe<n>", with "+gpu" when on a GPU
    vectors: np.ndarray

    @property
    def ivf(self):
        """The IVF under the re-ranking (its lists, its ``nprobe``); None for a flat index."""
        return _ivf(self.index)

    def search(
        self, queries: np.ndarray, k: int, batch_size: int = 1024
    ) -> Iterator[tuple[int, np.ndarray, np.ndarray]]:
        """Yield (start row, scores, ids) per batch of queries, in order: here, or on the run's cluster, whose
        workers each get the index once and search shards of queries (``search_on_cluster``)."""
        queries = np.ascontiguousarray(queries, dtype=np.float32)
        cluster = current_cluster()
        if cluster is not None:
            yield from search_on_cluster(cluster, self, queries, k, batch_size)
            return
        for start in tqdm(range(0, len(queries), batch_size), desc=f"FAISS {self.kind}", unit="batch"):
            scores, ids = self.index.search(queries[start : start + batch_size], k)
            yield start, scores, ids

    def serialized(self) -> np.ndarray:
        """The index as bytes (a GPU index is copied to the CPU first), for workers or a file."""
        return faiss.serialize_index(_on_cpu(self.index) if self.kind.endswith("+gpu") else self.index)


@dataclass(frozen=True)
class StoredIndex:
    """An index kept as an artifact: its FAISS file and its kind (from the artifact's manifest)."""

    path: Path
    kind: str

    def open(self, vectors: np.ndarray) -> SearchIndex:
        return read_index(self.path, self.kind, vectors)


def write_index(index: SearchIndex, path: Path) -> None:
    """The index as a FAISS file (an IVF's nprobe included); a GPU index is written from its CPU copy."""
    faiss.write_index(_on_cpu(index.index) if index.kind.endswith("+gpu") else index.index, str(path))


def read_index(path: Path, kind: str, vectors: np.ndarray) -> SearchIndex:
    """The index ``write_index`` wrote, over the candidates' ``vectors`` (for its measured recall), moved to the
    GPU when it was built on one and one is here; ``kind`` says which it is (from its manifest)."""
    index = faiss.read_index(str(path))
    if index.ntotal != len(vectors):
        raise ValueError(f"the index {path} holds {index.ntotal} vectors, the candidates are {len(vectors)}")
    on_gpu = False
    if kind.endswith("+gpu"):
        index, on_gpu = _to_gpu(index)
    return SearchIndex(index, kind.removesuffix("+gpu") + ("+gpu" if on_gpu else ""), np.ascontiguousarray(vectors))


IVF_CODES = "SQ8,RFlat"  # in faiss's factory terms: what an IVF's lists hold; its kind and its key say it too
REFINE_FACTOR = 2  # the IVF's codes find 2k candidates, the exact vectors rank the k best of them


def _ivf(index: faiss.Index):
    """The IVF part of ``index`` (itself, or the base its re-ranking wraps), or None for a flat index."""
    base = faiss.downcast_index(index.base_index) if isinstance(index, faiss.IndexRefine) else index
    return base if hasattr(base, "nprobe") else None


def _to_gpu(index: faiss.Index) -> tuple[faiss.Index, bool]:
    """On the GPU when there is one; a re-ranked IVF moves its IVF only (the re-ranking reads the exact vectors
    where they are, on the CPU)."""
    if not (hasattr(faiss, "StandardGpuResources") and faiss.get_num_gpus() > 0):
        return index, False
    resources = faiss.StandardGpuResources()
    if isinstance(index, faiss.IndexRefine):
        moved = faiss.IndexRefine(faiss.index_cpu_to_gpu(resources, 0, _ivf(index)), index.refine_index)
        moved.k_factor = index.k_factor
        moved.referenced_objects.append(index)  # the CPU index owns the exact vectors the re-ranking reads
        return moved, True
    return faiss.index_cpu_to_gpu(resources, 0, index), True


def _on_cpu(index: faiss.Index) -> faiss.Index:
    """A CPU copy of an index ``_to_gpu`` moved, to write or to send to workers."""
    if isinstance(index, faiss.IndexRefine):
        back = faiss.IndexRefine(faiss.index_gpu_to_cpu(_ivf(index)), index.refine_index)
        back.k_factor = index.k_factor
        return back
    return faiss.index_gpu_to_cpu(index)


def build_index(
    vectors: np.ndarray,
    exact_limit: int = EXACT_LIMIT,
    seed: int = 0,
    target_recall: float = 0.9,
    queries: np.ndarray | None = None,
) -> SearchIndex:
    """Flat inner-product index for small corpora, IVF (trained on a sample, spherical; 8-bit codes re-ranked on
    the exact vectors) for large ones.

    The IVF's nprobe is calibrated on ``queries`` (a sample of what will be searched for; None: of the corpus,
    each leaving itself out): the fewest probes whose recall@10 against exact search reaches ``target_recall``
    (doubled, then bisected; at most nlist/8: beyond that exact search is as fast, which is what uniformly
    random vectors, the worst case, need).
    """
    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    n, dim = vectors.shape
    if n == 0:
        raise ValueError("cannot build a search index over an empty corpus")
    if n <= exact_limit:
        index, on_gpu = _to_gpu(faiss.IndexFlatIP(dim))
        index.add(vectors)
        return SearchIndex(index, "flat" + ("+gpu" if on_gpu else ""), vectors)
    nlist = int(4 * math.sqrt(n))
    index = faiss.index_factory(dim, f"IVF{nlist},{IVF_CODES}", faiss.METRIC_INNER_PRODUCT)
    index.k_factor = REFINE_FACTOR
    # Spherical k-means (unit centroids), as inner product needs: plain k-means' centroids differ in norm, and the
    # longest draw most vectors; on the scale bench's 1M candidates one list in 69 held most of the corpus, and
    # searches at the same recall took twice as long.
    _ivf(index).cp.spherical = True
    rng = np.random.default_rng(seed)
    index.train(vectors[rng.choice(n, size=min(n, 64 * nlist), replace=False)])
    index.add(vectors)
    index, on_gpu = _to_gpu(index)
    if queries is None:
        chosen = rng.choice(n, size=min(n, CALIBRATION_QUERIES), replace=False)
        probe = np.ascontiguousarray(vectors[chosen])
    else:
        chosen = np.full(len(queries), -1)  # no query is a corpus row: none to leave out
        probe = np.ascontiguousarray(queries, dtype=np.float32)
    truth = _others(_exact_neighbours(vectors, probe, 11), chosen)
    nprobe = _calibrated_nprobe(index, probe, chosen, truth, nlist, target_recall)
    return SearchIndex(index, f"ivf{nlist},{IVF_CODES.lower()},nprobe{nprobe}" + ("+gpu" if on_gpu else ""), vectors)


def _others(found: np.ndarray, own: np.ndarray) -> np.ndarray:
    """Each row's first 10 neighbours other than the query itself (a corpus vector always finds itself, which
    the anchors mining searches for do not: counted, it would lift the measured recall by up to 0.1)."""
    return np.array([[i for i in row if i != me][:10] for row, me in zip(found.tolist(), own.tolist())])


def _calibrated_nprobe(
    index: faiss.Index, probe: np.ndarray, own: np.ndarray, truth: np.ndarray, nlist: int, target: float
) -> int:
    """The fewest probes reaching ``target`` recall@10 on ``probe`` (corpus vectors ``own``, each leaving itself
    out): doubled from nlist/64, then bisected between the last that fell short and the first that reached it
    (search time grows with nprobe, so overshooting by up to 2x would cost up to 2x), at most nlist/8; the index
    is left at it."""

    def reaches(nprobe: int) -> bool:
        _ivf(index).nprobe = nprobe
        return _overlap(truth, _others(index.search(probe, 11)[1], own)) >= target

    short, enough = 0, max(1, nlist // 64)  # short: the most probes known to fall short
    while not reaches(enough):
        if enough * 2 > nlist // 8:
            return enough  # the cap: beyond it exact search is as fast
        short, enough = enough, enough * 2
    while enough - short > max(1, enough // 16):  # to within 1/16 of it
        middle = (short + enough) // 2
        short, enough = (short, middle) if reaches(middle) else (middle, enough)
    _ivf(index).nprobe = enough
    return enough


def recall_at_k(index: SearchIndex, queries: np.ndarray, k: int = 10, sample: int = 500, seed: int = 0) -> float:
    """Share of the exact top-k that the index returns, on a sample of queries (1.0 for flat)."""
    if index.kind.startswith("flat"):
        return 1.0
    rng = np.random.default_rng(seed)
    return _recall(index, queries[rng.choice(len(queries), size=min(sample, len(queries)), replace=False)], k)


def _recall(index: SearchIndex, queries: np.ndarray, k: int) -> float:
    chosen = np.ascontiguousarray(queries, dtype=np.float32)
    return _overlap(_exact_neighbours(index.vectors, chosen, k), index.index.search(chosen, k)[1])


def _exact_neighbours(vectors: np.ndarray, queries: np.ndarray, k: int) -> np.ndarray:
    return faiss.knn(queries, vectors, k, metric=faiss.METRIC_INNER_PRODUCT)[1]


def _overlap(truth: np.ndarray, found: np.ndarray) -> float:
    """Share of the exact neighbours found (faiss's own recall measure)."""
    from faiss.contrib.evaluation import knn_intersection_measure

    return float(knn_intersection_measure(truth, found))
