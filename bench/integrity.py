"""Benchmark: what checking every stored byte costs a warm run.

    .venv/bin/python bench/integrity.py                      # the MNLI sample's texts through the bundled MiniLM
    .venv/bin/python bench/integrity.py --synthetic          # a store of the same size with random vectors (quicker)
    .venv/bin/python bench/integrity.py --warm-seconds 20    # the warm ``make run`` to weigh it against

A warm run reads back everything it reuses: each artifact's files against its manifest's sha256, and
(when mining runs again, e.g. with another window) every embedding shard against its sidecar. Both are
timed against the same reads without the check (manifest sizes only; ``pq.read_table`` of each shard),
median of ``--repeats``, in one process with warm page cache, as a re-run finds them. The sum is weighed
against the warm re-run's time (``--warm-seconds``: 20 s measured here, README "Quick start"): the ratio
(warm run) / (warm run without any verification) must stay within 1.05. A checkpoint's seal and its
check on resume are timed too (once per save and per resume, not part of a warm run).
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from bench.data import MINILM  # noqa: E402

TARGET = 1.05


def _median_seconds(work: Callable[[], object], repeats: int) -> float:
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        work()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def _texts() -> list[str]:
    """What semi-hard mining of the bundled sample encodes: each anchor, positive and candidate once."""
    import pandas as pd

    from tasks.negatives.strategies import candidate_pool, texts_to_encode
    from tasks.pairs.labels import mnr_pairs
    from tasks.pairs.sources import DEFAULT_NLI_SAMPLE

    raw = pd.read_parquet(DEFAULT_NLI_SAMPLE)[["premise", "hypothesis", "label"]]
    return texts_to_encode(mnr_pairs(raw), candidate_pool(raw))


def build_store(data_dir: Path, model, texts: list[str], synthetic: bool) -> float:
    """The store a mining run leaves (shards of 4,096 texts); returns the seconds it took."""
    import numpy as np

    from tasks.negatives import embeddings

    started = time.perf_counter()
    if not synthetic:
        embeddings.encode_cached(data_dir, model, texts)
        return time.perf_counter() - started
    rng = np.random.default_rng(0)
    store = embeddings._store(data_dir, model)
    hashes = [embeddings.text_hash(t) for t in texts]
    for first in range(0, len(texts), 4096):
        vectors = rng.standard_normal((len(hashes[first : first + 4096]), 384)).astype(np.float32)
        vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
        embeddings._write_shard(store, hashes[first : first + 4096], vectors)
    return time.perf_counter() - started


def shard_reads(data_dir: Path, model, texts: list[str], repeats: int) -> tuple[float, float]:
    """A warm mining re-read (``encode_cached`` finding every text), checked and with the shards' old plain
    read: (verified, unverified) seconds."""
    import pyarrow.parquet as pq

    from tasks.negatives import embeddings

    def reread() -> None:
        _, encoded = embeddings.encode_cached(data_dir, model, texts)
        assert encoded == 0

    checked = embeddings._checked_table
    reread()  # page cache warm, imports done
    verified = _median_seconds(reread, repeats)
    embeddings._checked_table = lambda shard: pq.read_table(shard)
    try:
        unverified = _median_seconds(reread, repeats)
    finally:
        embeddings._checked_table = checked
    return verified, unverified


def warm_run_artifacts(data_dir: Path, model, texts: list[str]) -> list[tuple[str, str]]:
    """Artifacts of the size a warm ``make run`` reuses: raw, pairs, triplets, tokens, the model, two
    metrics, a report and the release (the model again, copied as the release copies it)."""
    import pandas as pd
    from sentence_transformers import SentenceTransformer

    from tasks.negatives.strategies import MiningConfig, soft_negatives
    from tasks.pairs.labels import mnr_pairs
    from tasks.pairs.sources import DEFAULT_NLI_SAMPLE
    from tasks.store.artifacts import materialize, write_parquet
    from tasks.training.tokens import tokenize_frame

    raw = pd.read_parquet(DEFAULT_NLI_SAMPLE)[["premise", "hypothesis", "label"]]
    pairs = mnr_pairs(raw)
    triplets = soft_negatives(pairs, raw, MiningConfig())
    ids = tokenize_frame(triplets[["anchor", "positive", "negative"]], "mnr", SentenceTransformer(model.location))
    tables = {"raw": raw, "pairs": pairs, "triplets": triplets, "tokens": ids}

    def table(name: str):
        return lambda folder: write_parquet(tables[name], folder / f"{name}.parquet")

    def model_folder(folder: Path) -> None:
        shutil.copytree(model.location, folder / "model")

    def small(folder: Path) -> None:
        (folder / "metrics.json").write_text('{"stsb_test_spearman": 0.8}')

    builds = {**{name: table(name) for name in tables}, "models": model_folder, "releases": model_folder}
    builds |= {"metrics": small, "metrics-trained": small, "reports": small}
    refs = [materialize(data_dir, stage, 1, {}, [], build) for stage, build in builds.items()]
    return [(ref.stage, ref.key) for ref in refs]


def manifest_checks(data_dir: Path, refs: list[tuple[str, str]], repeats: int) -> tuple[float, float, int]:
    """``find`` on each artifact (every file's sha256 against the manifest) and the same with sizes only:
    (verified, unverified seconds, bytes checked)."""
    from tasks.store import artifacts

    def verified() -> None:
        assert all(artifacts.find(data_dir, stage, key) for stage, key in refs)

    def sizes_only() -> None:
        for stage, key in refs:
            folder = artifacts.artifacts_root(data_dir) / stage / key
            manifest = artifacts.read_manifest(folder)
            assert manifest is not None
            for rel, info in manifest["files"].items():
                assert (folder / rel).is_file() and (folder / rel).stat().st_size == info["bytes"]

    verified()
    total = sum(
        info["bytes"]
        for stage, key in refs
        for info in artifacts.read_manifest(artifacts.artifacts_root(data_dir) / stage / key)["files"].values()
    )
    return _median_seconds(verified, repeats), _median_seconds(sizes_only, repeats), total


def checkpoint_costs(folder: Path, model) -> tuple[float, float, int]:
    """Sealing a MiniLM-sized checkpoint (weights + an fp32 AdamW state twice their size) and checking it on
    resume: (seal seconds, check seconds, bytes)."""
    from tasks.training import checkpoints

    folder.mkdir(parents=True)
    weights = Path(model.location) / "model.safetensors"
    shutil.copy2(weights, folder / "model.safetensors")
    with open(folder / "optimizer.pt", "wb") as handle:
        for _ in range(2 * weights.stat().st_size // (1 << 20) + 1):
            handle.write(os.urandom(1 << 20))
    size = sum(p.stat().st_size for p in folder.iterdir())
    started = time.perf_counter()
    checkpoints.write_seal(folder, 500)
    sealed = time.perf_counter() - started
    started = time.perf_counter()
    assert checkpoints.damaged_files(folder) == []
    return sealed, time.perf_counter() - started, size


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--synthetic", action="store_true", help="random vectors instead of encoding with MiniLM")
    parser.add_argument("--warm-seconds", type=float, default=20.0, help="a warm `make run` here (README: 20 s)")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()

    from tasks.models.resolve import resolve_model
    from tasks.negatives.embeddings import SHARDS, _store

    model = resolve_model(MINILM)
    texts = _texts()
    with tempfile.TemporaryDirectory() as tmp:
        data_dir = Path(tmp)
        built = build_store(data_dir, model, texts, args.synthetic)
        shards = sorted(_store(data_dir, model).glob(SHARDS))
        store_bytes = sum(p.stat().st_size for p in shards)
        shard_v, shard_u = shard_reads(data_dir, model, texts, args.repeats)
        refs = warm_run_artifacts(data_dir, model, texts)
        manifest_v, manifest_u, manifest_bytes = manifest_checks(data_dir, refs, args.repeats)
        seal, check, checkpoint_bytes = checkpoint_costs(data_dir / "checkpoint-500", model)

    how = "random vectors" if args.synthetic else f"encoded with MiniLM in {built:.1f} s (a store's one-off re-encode)"
    print(f"embedding store: {len(texts):,} texts, {len(shards)} shards, {store_bytes / 1e6:.1f} MB, {how}")
    print(
        f"  mining re-read: {shard_u * 1e3:.0f} ms unchecked, {shard_v * 1e3:.0f} ms checked ({shard_v / shard_u:.2f}x)"
    )
    print(f"manifests: {len(refs)} artifacts, {manifest_bytes / 1e6:.1f} MB")
    extra = manifest_v - manifest_u
    print(f"  reuse: {manifest_u * 1e3:.1f} ms sizes only, {manifest_v * 1e3:.0f} ms sha256 ({extra:.3f} s more)")
    verifying = max(shard_v - shard_u, 0.0) + max(manifest_v - manifest_u, 0.0)
    ratio = args.warm_seconds / (args.warm_seconds - verifying)
    print(f"checkpoint ({checkpoint_bytes / 1e6:.0f} MB): seal {seal:.2f} s per save, check {check:.2f} s per resume")
    print(f"warm run {args.warm_seconds:.1f} s, of which verifying {verifying:.3f} s (shards + manifests)")
    verdict = "within" if ratio <= TARGET else "OVER"
    print(f"ratio warm run / warm run without verification: {ratio:.4f} ({verdict} the {TARGET} target)")


if __name__ == "__main__":
    main()
