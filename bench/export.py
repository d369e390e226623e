"""Benchmark: every export format against the PyTorch model, in one invocation on the same texts.

    .venv/bin/python bench/export.py                         # the bundled all-MiniLM-L6-v2
    .venv/bin/python bench/export.py --model data/artifacts/models/<key>/model   # a trained model
    .venv/bin/python bench/export.py --formats onnx static --texts 2000

For each format: STS-B test Spearman and Banking77 accuracy (the pipeline's own evaluation, mteb for
Banking77) and their difference from PyTorch fp32; CPU encoding speed (texts/s over the same texts in
the same token-length batches of 64, one process, after a warm-up batch) as a ratio against PyTorch;
load time; size on disk. Exits 1 when a format's scores leave its tolerance
(``tasks/shipping/compare.py``: fp32 formats 0.001).
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


def main() -> int:
    import random

    from tasks.evaluation.data import evaluation_texts
    from tasks.evaluation.settings import EvalSettings
    from tasks.models.resolve import bundled_minilm_dir
    from tasks.shipping.compare import compare_formats, markdown
    from tasks.shipping.exports import FORMATS, export_model

    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default=None, help="a sentence-transformers folder (default: bundled MiniLM)")
    parser.add_argument("--formats", nargs="*", default=list(FORMATS))
    parser.add_argument("--texts", type=int, default=4000, help="a seeded sample of the evaluation texts for speed")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--json", default=None, help="also write the table here")
    args = parser.parse_args()

    folder = Path(args.model) if args.model else bundled_minilm_dir()
    texts = evaluation_texts()
    texts = random.Random(0).sample(texts, min(args.texts, len(texts)))
    with tempfile.TemporaryDirectory() as scratch:
        exports, seconds = {}, {}
        for fmt in args.formats:
            start = time.perf_counter()
            export_model(folder, fmt, Path(scratch) / fmt)
            exports[fmt], seconds[fmt] = Path(scratch) / fmt, time.perf_counter() - start
        table = compare_formats(folder, exports, EvalSettings(), texts, Path(scratch) / "eval", repeats=args.repeats)
    table["export_seconds"] = table["format"].map(seconds)
    print(f"\nmodel: {folder}\ntexts for speed: {len(texts)}, batch 64, one process\n")
    print(markdown(table))
    print("\nexport seconds: " + ", ".join(f"{k} {v:.1f}" for k, v in seconds.items()))
    if args.json:
        Path(args.json).write_text(json.dumps(table.to_dict(orient="records"), indent=2, default=str))
    bad = table.loc[~table["within_tolerance"], "format"].tolist()
    if bad:
        print(f"\noutside tolerance: {bad}")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
