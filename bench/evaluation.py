"""Benchmark: evaluation encoding in token-length order against sentence-transformers' character order.

    .venv/bin/python bench/evaluation.py               # every text STS-B and Banking77 evaluation encodes
    .venv/bin/python bench/evaluation.py --texts 4000  # a seeded sample, quicker

Before, evaluation handed each split to one ``model.encode`` call (EmbeddingSimilarityEvaluator,
mteb), which orders texts by characters; now ``encode_in_token_order`` batches them by token
count. Both encode the same texts with the bundled all-MiniLM-L6-v2 at batch 64 in this process,
reference first; the figures are the ratio of the two times and the padded tokens per real token
of each ordering. The embeddings must agree, or the scores would move.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def padding(lengths, order, batch_size: int) -> float:
    """Padded tokens per real token when ``order`` is cut into batches of ``batch_size``."""
    computed = sum(max(lengths[i] for i in order[s : s + batch_size]) * len(order[s : s + batch_size])
                   for s in range(0, len(order), batch_size))  # fmt: skip
    return computed / sum(lengths)


def main() -> None:
    import numpy as np

    from tasks.evaluation.data import evaluation_texts
    from tasks.models.encoding import encode_in_token_order, load_model, text_token_lengths
    from tasks.models.resolve import resolve_model

    parser = argparse.ArgumentParser()
    parser.add_argument("--texts", type=int, default=0, help="a seeded sample of this many texts (0: all)")
    parser.add_argument("--batch-size", type=int, default=64)
    args = parser.parse_args()

    texts = evaluation_texts()
    if args.texts:
        texts = [texts[i] for i in np.random.default_rng(0).choice(len(texts), args.texts, replace=False)]
    model = load_model(resolve_model("sentence-transformers/all-MiniLM-L6-v2"))
    lengths = text_token_lengths(model, texts)
    by_chars = sorted(range(len(texts)), key=lambda i: -len(texts[i]))  # sentence-transformers' own order
    by_tokens = sorted(range(len(texts)), key=lambda i: -lengths[i])

    started = time.perf_counter()
    reference = model.encode(texts, batch_size=args.batch_size, convert_to_numpy=True)
    reference_s = time.perf_counter() - started
    started = time.perf_counter()
    ours = encode_in_token_order(model, texts, args.batch_size, convert_to_numpy=True)
    ours_s = time.perf_counter() - started

    result = {
        "texts": len(texts),
        "reference_seconds": round(reference_s, 1),
        "token_order_seconds": round(ours_s, 1),
        "speedup": round(reference_s / ours_s, 3),
        "pad_character_order": round(padding(lengths, by_chars, args.batch_size), 3),
        "pad_token_order": round(padding(lengths, by_tokens, args.batch_size), 3),
        "max_abs_difference": float(np.abs(reference - ours).max()),
    }
    print(json.dumps(result, indent=2))
    print(
        f"RESULT speedup={result['speedup']} pad_character_order={result['pad_character_order']} "
        f"pad_token_order={result['pad_token_order']}"
    )


if __name__ == "__main__":
    main()
