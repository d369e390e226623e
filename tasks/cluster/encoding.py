"""Encoding on the cluster's workers: each loads the model once (a ``WorkerPlugin``) on its own device, and
encodes shards of batches exactly as one process would, one ``encode`` call per batch of similar token
length, so the vectors equal the in-process ones (the same batches, the same kernels).

The embedding cache sends shards of texts, each counted and batched by token length on the worker that
encodes it (``negatives.embeddings``): no pass over every text before the first shard. Evaluation sends
shards of batches already in token order, longest first, a few batches each. Either way the workers stay busy
to the end and the progress bar moves as shards come back. A shard that fails is retried once elsewhere by
Dask; a worker that dies takes only its shard with it.
"""

from __future__ import annotations

import contextlib
import gc
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from distributed import WorkerPlugin

from tasks.cluster.connection import Cluster
from tasks.models.precision import Precision
from tasks.models.resolve import ResolvedModel

BATCHES_PER_SHARD = 8  # a shard: this many encoding batches (4,096 texts on a GPU, 512 on a CPU)


def located(model: ResolvedModel, data_dir: str) -> str:
    """Where ``model`` lies on this worker, the same model the run resolved (by fingerprint): a local folder the
    worker sees (a shared one), a trained model of a URL store pulled into the worker's own mirror, or a hub or
    bundled model resolved again here (its own cache or package)."""
    from tasks.models.resolve import resolve_model

    if model.source != "local":
        here = resolve_model(model.name)
        if here.fingerprint != model.fingerprint:
            raise FileNotFoundError(f"model {model.name!r}: this worker resolves {here.fingerprint}, the run "
                                    f"{model.fingerprint}")  # fmt: skip
        return here.location
    if Path(model.location).exists():
        return model.location
    from tasks.store import remote
    from tasks.store.artifacts import find

    if remote.is_url(data_dir) and model.name.startswith("models/"):
        found = find(data_dir, "models", model.name.removeprefix("models/"))
        if found is not None:
            return str(found.folder / "model")
    raise FileNotFoundError(f"model {model.name!r}: {model.location} is not on this worker, nor in store {data_dir}")


def worker_device(worker) -> str:
    """A GPU of its own for each local worker (by its index among them), ``cuda`` for a remote GPU worker
    (one GPU each, by CUDA_VISIBLE_DEVICES), else the CPU."""
    import torch

    if not torch.cuda.is_available():
        return "cpu"
    name = worker.name
    return f"cuda:{int(name) % torch.cuda.device_count()}" if str(name).isdigit() else "cuda"


class ModelOnWorker(WorkerPlugin):
    """The model, loaded once per worker when registered (and on a worker that joins later), and dropped
    when unregistered."""

    def __init__(self, model: ResolvedModel, precision: str, data_dir: str) -> None:
        self.model, self.precision, self.data_dir = asdict(model), precision, data_dir
        self.encoder = None

    def setup(self, worker) -> None:
        from tasks.models.encoding import load_model
        from tasks.models.precision import runs_as

        device = worker_device(worker)
        if runs_as(self.precision, device).value != self.precision:  # the run keys and stores by this precision
            raise ValueError(f"encode_cluster: worker {worker.address} runs {self.precision} as "
                             f"{runs_as(self.precision, device).value} on {device}")  # fmt: skip
        model = ResolvedModel(**self.model)
        try:
            model = ResolvedModel(model.name, located(model, self.data_dir), model.source, model.fingerprint)
        except FileNotFoundError as exc:
            raise FileNotFoundError(f"encode_cluster: worker {worker.address}: {exc}") from None
        self.encoder = load_model(model, device=device, precision=self.precision)

    def teardown(self, worker) -> None:
        import torch

        self.encoder = None
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()  # the GPU's memory back for what runs next there (training)


def worker_encoder(plugin: str):
    """On a worker: the model its ``plugin`` loaded."""
    from distributed import get_worker

    return get_worker().plugins[plugin].encoder


def encode_batches(encoder, batches: Sequence[Sequence[str]], function: str = "encode", **kwargs) -> np.ndarray:
    """One ``encode`` call per batch (given a longer list, sentence-transformers would re-order it by
    characters), as float32 rows in the batches' order. ``function``: ``encode`` or mteb's
    ``encode_query``/``encode_document``."""
    call = getattr(encoder, function)
    out = []
    for batch in batches:
        vectors = call(list(batch), **kwargs | {"batch_size": len(batch), "show_progress_bar": False})
        out.append(vectors.float().cpu().numpy() if hasattr(vectors, "cpu") else np.asarray(vectors, np.float32))
    return np.concatenate(out) if out else np.zeros((0, 0), dtype=np.float32)


def _encode_shard(plugin: str, batches: list[list[str]], function: str, kwargs: dict) -> np.ndarray:
    """On a worker: ``encode_batches`` with the model its ``plugin`` loaded."""
    return encode_batches(worker_encoder(plugin), batches, function, **kwargs)


@dataclass
class ClusterEncoder:
    """The model loaded on every worker of ``cluster`` (``model_on_cluster``), ready to take shards."""

    cluster: Cluster
    plugin: str
    model: ResolvedModel

    def map_shards(self, fn: Callable, shards: Sequence[tuple], on_done: Callable[[int, object], None]) -> None:
        """Run ``fn(plugin, *shard)`` for each shard on the workers; ``on_done(i, result)`` as each comes back."""
        from distributed import as_completed

        resources = self.cluster.encoding_resources()
        client = self.cluster.client
        futures = {
            client.submit(fn, self.plugin, *shard, resources=resources, pure=False, retries=1, priority=-i): i
            for i, shard in enumerate(shards)
        }
        try:
            for future in as_completed(futures):
                on_done(futures[future], future.result())
                future.release()
        finally:
            left = [future for future in futures if not future.done()]  # an error, or the caller stopped early
            if left:
                client.cancel(left)

    def encode(self, batches: list[list[str]], bar=None, function: str = "encode", **kwargs) -> np.ndarray:
        """The vectors of ``batches`` (concatenated in their order), encoded on the workers shard by shard."""
        shards = [batches[i : i + BATCHES_PER_SHARD] for i in range(0, len(batches), BATCHES_PER_SHARD)]
        done: list[np.ndarray | None] = [None] * len(shards)

        def collect(i: int, vectors) -> None:
            done[i] = vectors
            if bar is not None:
                bar.update(sum(len(b) for b in shards[i]))

        self.map_shards(_encode_shard, [(shard, function, kwargs) for shard in shards], collect)
        return np.concatenate(done) if done else np.zeros((0, 0), dtype=np.float32)


@contextlib.contextmanager
def model_on_cluster(
    cluster: Cluster, model: ResolvedModel, precision: str | Precision = Precision.FP32
) -> Iterator[ClusterEncoder]:
    """``model`` loaded on every worker for the length of the block (``precision``: as ``load_model`` takes
    it), then unloaded: a worker holds only the models the run is using. Inside a block that holds the same model
    loaded, the workers' copy serves (several encodings in a row load it once)."""
    precision = precision.value if isinstance(precision, Precision) else precision
    held = (model.fingerprint, precision)
    if held in cluster.models:
        yield ClusterEncoder(cluster, cluster.models[held], model)
        return
    name = f"train-embeddings-model-{model.fingerprint[:16]}-{precision}-{uuid.uuid4().hex[:8]}"
    try:  # registered inside: a worker whose setup fails must not leave the model loaded on the others
        cluster.client.register_plugin(ModelOnWorker(model, precision, cluster.data_dir), name=name)
        cluster.models[held] = name
        yield ClusterEncoder(cluster, name, model)
    finally:
        cluster.models.pop(held, None)
        with contextlib.suppress(Exception):  # a worker gone already has nothing to unload
            cluster.client.unregister_worker_plugin(name)


@contextlib.contextmanager
def encoding_pool(
    model, resolved: ResolvedModel | None, precision: str | Precision = Precision.FP32
) -> Iterator[object]:
    """Where ``encode_in_token_order`` sends its batches: the run's cluster, with ``resolved`` (the model
    ``model`` was loaded from, at ``precision``) loaded on every worker; else ``models.encoding``'s pool (every
    local GPU at once when there are several, or this process)."""
    from tasks.cluster.connection import current_cluster
    from tasks.models import encoding

    cluster = current_cluster()
    if cluster is None or resolved is None:
        with encoding.encoding_pool(model) as pool:
            yield pool
        return
    with model_on_cluster(cluster, resolved, precision) as remote:
        yield remote
