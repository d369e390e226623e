"""Benchmark: what the held-out split's retrieval metrics add to the evaluation stage (target: at most 20%).

    .venv/bin/python bench/holdout.py                 # make run's setting: eval_holdout=0.05, 2,000 distractors
    .venv/bin/python bench/holdout.py --distractors 10000

The bundled all-MiniLM-L6-v2 is evaluated as the evaluation stage evaluates a model (STS-B validation and
test, Banking77, every row), in one process: without a held-out split, then with it, then without again
(the reference is the mean of the two, so warm-up favours neither). The held-out run encodes its queries
and corpus through an empty embedding cache, as a freshly trained model does. The figure is the extra time
as a fraction of the reference; the held-out metrics are printed beside it.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
TARGET = 0.20


def main() -> None:
    import pandas as pd

    from tasks.evaluation.evaluate import evaluate_model
    from tasks.evaluation.settings import EvalSettings
    from tasks.models.encoding import load_model
    from tasks.models.precision import Precision
    from tasks.models.resolve import BUNDLED_MINILM, resolve_model
    from tasks.negatives.embeddings import encode_cached
    from tasks.pairs import holdout
    from tasks.pairs.sources import DEFAULT_NLI_SAMPLE

    parser = argparse.ArgumentParser()
    parser.add_argument("--fraction", type=float, default=0.05)
    parser.add_argument("--distractors", type=int, default=holdout.DISTRACTORS)
    args = parser.parse_args()

    split = holdout.split(pd.read_parquet(DEFAULT_NLI_SAMPLE), args.fraction)
    retrieval = holdout.retrieval_set(split, args.distractors, "bench")
    resolved = resolve_model(BUNDLED_MINILM)
    model = load_model(resolved, precision="fp32")
    settings = EvalSettings()
    with tempfile.TemporaryDirectory() as scratch:
        store = Path(scratch)

        def timed(name: str, **held_out) -> tuple[float, dict]:
            started = time.perf_counter()
            metrics = evaluate_model(model, settings, store / name, **held_out)
            return time.perf_counter() - started, metrics

        before, _ = timed("reference-1")
        cached = lambda texts: encode_cached(store, resolved, texts, precision=Precision.FP32)[0]  # noqa: E731
        with_split, metrics = timed("holdout", retrieval=retrieval, cached=cached)
        after, _ = timed("reference-2")
    reference = (before + after) / 2
    extra = (with_split - reference) / reference
    result = {
        "retrieval": retrieval.sizes(),
        "reference_s": [round(before, 1), round(after, 1)],
        "with_holdout_s": round(with_split, 1),
        "extra": round(extra, 3),
        "target": TARGET,
        "passed": extra <= TARGET,
        "held_out_metrics": {k: round(v, 4) for k, v in metrics.items() if k.startswith("holdout_")},
    }
    print(json.dumps(result, indent=2))
    sys.exit(0 if result["passed"] else 1)


if __name__ == "__main__":
    main()
