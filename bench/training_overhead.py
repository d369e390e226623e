"""Benchmark: the pipeline's tokens and training stages against a bare SentenceTransformerTrainer script.

    .venv/bin/python bench/training_overhead.py [--steps 40] [--repeats 2]

Same data (soft-negative triplets of the bundled MNLI sample), same model (bundled MiniLM),
same settings (MNR, batch 32, no evaluation during training). Each measurement runs in a fresh
subprocess; the stage is timed as a Prefect task inside a flow against a temporary server that
was started before the clock, so the figure is the orchestration and artifact overhead
(manifest, checksums, throughput accounting), not server start-up. The tokens stage runs cold inside
the clock, since the bare script tokenises as it trains. Printed as a ratio.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from bench.data import MINILM, triplets  # noqa: E402
from bench.isolation import isolated  # noqa: E402


def bare(data: str, out: str, steps: int) -> dict:
    """The sentence-transformers example, nothing else."""
    import pandas as pd
    from datasets import Dataset
    from sentence_transformers import SentenceTransformer, SentenceTransformerTrainer, losses
    from sentence_transformers.training_args import SentenceTransformerTrainingArguments

    from tasks.models.resolve import bundled_minilm_dir

    started = time.perf_counter()
    model = SentenceTransformer(str(bundled_minilm_dir()))
    dataset = Dataset.from_pandas(pd.read_parquet(data), preserve_index=False)
    args = SentenceTransformerTrainingArguments(
        output_dir=f"{out}/trainer",
        max_steps=steps,
        per_device_train_batch_size=32,
        warmup_steps=10,
        learning_rate=5e-5,
        report_to="none",
        save_strategy="no",
        seed=42,
        data_seed=42,
        use_cpu=True,
    )
    trainer = SentenceTransformerTrainer(
        model=model, args=args, train_dataset=dataset, loss=losses.MultipleNegativesRankingLoss(model)
    )
    trainer.train()
    model.save(f"{out}/model")
    return {"seconds": time.perf_counter() - started}


def pipeline(data: str, out: str, steps: int) -> dict:
    """The pipeline's train stage, as a Prefect task in a flow."""
    from prefect import flow
    from prefect.testing.utilities import prefect_test_harness

    from tasks import stages
    from tasks.models.resolve import resolve_model
    from tasks.store.artifacts import ArtifactRef
    from tasks.training.recipe import recipe_and_runtime

    ref = ArtifactRef("triplets", "bench", str(Path(data).parent))
    config = recipe_and_runtime(loss="mnr", batch_size=32, warmup_steps=10, eval_steps=0, max_steps=steps)

    @flow
    def train_only() -> float:
        started = time.perf_counter()  # cold: the tokens stage runs inside the clock, as the bare script tokenises
        base = resolve_model(MINILM)
        ids = stages.tokenize(ref, base, "mnr", out)
        stages.train(ids, base, *config, out)
        return time.perf_counter() - started

    with prefect_test_harness(server_startup_timeout=120):
        return {"seconds": train_only()}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        data = str(triplets(Path(tmp)))
        bare_s, ours_s = [], []
        for i in range(args.repeats):  # alternate, so drift in machine load hits both
            bare_s.append(isolated(bare, data=data, out=f"{tmp}/bare{i}", steps=args.steps)["seconds"])
            ours_s.append(isolated(pipeline, data=data, out=f"{tmp}/ours{i}", steps=args.steps)["seconds"])
    best_bare, best_ours = min(bare_s), min(ours_s)
    print(f"| variant | wall s (best of {args.repeats}) | ratio |")
    print("|---|---|---|")
    print(f"| bare SentenceTransformerTrainer script | {best_bare:.1f} | 1.00× |")
    print(f"| pipeline train stage (Prefect task + artifact) | {best_ours:.1f} | {best_ours / best_bare:.3f}× |")
    print(f"({args.steps} steps of batch 32, MNR, bundled MiniLM, CPU; all runs: bare {bare_s}, ours {ours_s})")


if __name__ == "__main__":
    main()
