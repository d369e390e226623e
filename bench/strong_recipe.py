"""Benchmark: the `strong` MNR recipe's training throughput, against the same recipe with the
no-duplicates sampler and mixed precision switched off, in one invocation.

    .venv/bin/python bench/strong_recipe.py                    # on a GPU worker: 60 steps of batch 256
    .venv/bin/python bench/strong_recipe.py --steps 3 --batch-size 64 --negatives soft   # a CPU smoke run

Both variants train through the pipeline's own ``train_model`` (CachedMultipleNegativesRankingLoss,
mini-batch 32, lr 2e-5, warmup ratio 0.1) on the same triplets of the bundled MNLI sample with the
same model (the bundled all-MiniLM-L6-v2 unless ``--model`` names a local folder), each in a fresh
process. Reported: samples/s, tokens/s and the MFU estimate (CUDA only), and the ratio of the
strong recipe's samples/s to the plain variant's. On CPU mixed precision is off in both, so only
the sampler differs there.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from bench.data import MINILM, triplets  # noqa: E402
from bench.isolation import isolated  # noqa: E402


def variant(data: str, out: str, model: str, config: dict) -> dict:
    import pandas as pd

    from tasks.evaluation import sts_validation
    from tasks.models import resolve_model
    from tasks.training import TrainConfig, train_model

    summary = train_model(
        resolve_model(model).location, pd.read_parquet(data), sts_validation(), TrainConfig(**config), Path(out)
    )
    keep = ("device", "mixed_precision", "steps", "seconds", "samples_per_second", "tokens_per_second", "mfu")
    return {k: summary[k] for k in keep}


def main() -> None:
    from tasks.recipes import RECIPES

    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--batch-size", type=int, default=RECIPES["strong"]["batch_size"])
    parser.add_argument("--negatives", choices=("semi-hard", "soft"), default="semi-hard")
    parser.add_argument("--model", default=MINILM, help="a hub name or a local model folder")
    args = parser.parse_args()
    from dataclasses import fields

    from tasks.training import TrainConfig

    # the recipe's training settings as the flow would pass them, for a fixed number of steps
    trainable = {f.name for f in fields(TrainConfig)}
    config = {k: v for k, v in RECIPES["strong"].items() if k in trainable} | {
        "batch_size": args.batch_size,
        "max_steps": args.steps,
        "eval_steps": 0,
        "checkpoint_steps": 0,
    }
    plain = {**config, "precision": "fp32", "batch_sampler": "batch_sampler"}
    with tempfile.TemporaryDirectory() as tmp:
        data = str(triplets(Path(tmp), args.negatives))
        ours = isolated(variant, data=data, out=f"{tmp}/strong", model=args.model, config=config)
        base = isolated(variant, data=data, out=f"{tmp}/plain", model=args.model, config=plain)
    results = ROOT / "bench" / "results"
    results.mkdir(parents=True, exist_ok=True)
    (results / "strong_recipe.json").write_text(json.dumps({"strong": ours, "plain": base}, indent=2))
    print(f"device: {ours['device']}; {args.steps} steps of batch {args.batch_size}, {args.negatives} negatives")
    print("| variant | precision | samples/s | tokens/s | MFU | ratio (samples/s) |")
    print("|---|---|---|---|---|---|")
    for name, r in (("strong (no-duplicates sampler, mixed precision)", ours), ("strong, sampler and AMP off", base)):
        print(
            f"| {name} | {r['mixed_precision']} | {r['samples_per_second']} | {r['tokens_per_second']} | "
            f"{r['mfu']} | {r['samples_per_second'] / base['samples_per_second']:.2f}× |"
        )


if __name__ == "__main__":
    main()
