"""Benchmark: training throughput side by side, on the same triplets and the same model.

    .venv/bin/python bench/training_throughput.py            # CUDA: bert-base architecture and MiniLM
    .venv/bin/python bench/training_throughput.py --cpu      # a few minutes: tiny BERT + the input pipeline

Variants, each in a fresh process so its time and peak memory are its own:
  (a) a raw PyTorch floor: pre-tokenised ids, bf16 autocast, fused AdamW, SDPA, MNR with in-batch
      negatives, one optimizer step per batch, nothing else;
  (b) the bare sentence-transformers trainer in the seed notebook's setting (MNR, batch 32, fp16);
  (c) the pipeline's train stage (``train_model`` on the tokens stage's ids) in the seed setting and
      in the ``strong`` recipe (batch 256, bf16, no-duplicates sampler), plus chunk-cost and
      torch.compile variants on CUDA.
Reported: triplets/s, real tokens/s, padded/real tokens, model FLOPs utilisation against a bf16
(CUDA) or fp32 (CPU) matrix-product peak measured in the same invocation, peak GPU memory.

Steady state: every variant runs ``--warmup`` steps first (kernel selection, memory pools, loader
workers, ``torch.compile``), then is timed from that fixed step until ``--seconds`` of compute have
passed (60 on CUDA), with the device synchronised at both ends. Start-up (model load, trainer set-up,
until the first step begins) and the warm-up steps (where compiling happens) are reported apart.

``--cpu`` also measures the input pipeline alone, one process, batch 256: triplets/s delivered to
the training step by the stock sentence-transformers collator (tokenising every batch) and by ours
(padding ids of the tokens stage), and the padded/real ratio of the batches the GPU path builds
without flash attention. Its last line is ``RESULT input_pipeline_ratio=<ours/stock> pad_ratio=<..>``.
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
os.environ.setdefault("WANDB_DISABLED", "true")
ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from bench.data import BERT_BASE, TINY_BERT, build_bert, triplets_frame  # noqa: E402
from bench.isolation import isolated  # noqa: E402

SEED_ROWS = 16_875  # the seed notebook's MNR pairs (entailment rows of its 50,000 MNLI pairs)


def matmul_peak(cuda: bool) -> float:
    """FLOP/s of a large matrix product: bf16 8192^3 on CUDA, fp32 2048^3 on the CPU (median of repeats)."""
    import torch

    n, dtype, device = (8192, torch.bfloat16, "cuda") if cuda else (2048, torch.float32, "cpu")
    a, b = torch.randn(n, n, dtype=dtype, device=device), torch.randn(n, n, dtype=dtype, device=device)
    times = []
    for i in range(13):
        if cuda:
            torch.cuda.synchronize()
        started = time.perf_counter()
        a @ b
        if cuda:
            torch.cuda.synchronize()
        if i >= 3:
            times.append(time.perf_counter() - started)
    return 2 * n**3 / sorted(times)[len(times) // 2]


class SteadyClock:
    """Times steps from step ``warmup`` until ``seconds`` of compute have passed, then asks to stop.

    ``begin()`` when the first step is about to run, ``step(n)`` after step n; ``startup`` is from the
    variant's start to the first step, ``warmup_seconds`` the warm-up steps, ``timed_steps`` and
    ``seconds`` the steady window.
    """

    def __init__(self, warmup: int, seconds: float) -> None:
        self.created, self.warmup, self.window = time.perf_counter(), warmup, seconds
        self.began = self.t0 = None
        self.startup = self.warmup_seconds = self.seconds = None
        self.timed_steps = 0

    @staticmethod
    def _now() -> float:
        import torch

        if torch.cuda.is_available():
            torch.cuda.synchronize()
        return time.perf_counter()

    def begin(self) -> None:
        self.began = self._now()
        self.startup = self.began - self.created

    def step(self, n: int) -> bool:
        """After step ``n``; True when the window is full."""
        if n == self.warmup:
            self.t0 = self._now()
            self.warmup_seconds = self.t0 - self.began
            return False
        if self.t0 is None or n < self.warmup or (n - self.warmup) % 5:
            return False
        now = self._now()
        if now - self.t0 < self.window:
            return False
        self.timed_steps, self.seconds = n - self.warmup, now - self.t0
        return True

    def report(self, batch_size: int, tokens_per_sample: float) -> dict:
        rate = self.timed_steps * batch_size / self.seconds
        return {
            "samples_per_second": rate,
            "tokens_per_second": rate * tokens_per_sample,
            "timed_steps": self.timed_steps,
            "timed_seconds": round(self.seconds, 1),
            "startup_seconds": round(self.startup, 1),
            "warmup_seconds": round(self.warmup_seconds, 1),
        }


def trainer_clock(clock: SteadyClock):
    """The clock as a TrainerCallback: it begins at the first step and stops training when its window is full."""
    from transformers import TrainerCallback

    class Clock(TrainerCallback):
        def on_step_begin(self, args, state, control, **kwargs):
            if clock.began is None:
                clock.begin()

        def on_step_end(self, args, state, control, **kwargs):
            if clock.step(state.global_step):
                control.should_training_stop = True

    return Clock()


def _memory() -> float | None:
    import torch

    return round(torch.cuda.max_memory_allocated() / 2**30, 2) if torch.cuda.is_available() else None


def _ids(model_dir: str, data: str):
    import pandas as pd
    from sentence_transformers import SentenceTransformer

    from tasks.training import tokens

    model = SentenceTransformer(model_dir)
    frame = pd.read_parquet(data)
    return model, tokens.TokenizedData(tokens.tokenize_frame(frame, "mnr", model), tokens.tokenizer_spec(model))


def raw_floor(model_dir: str, data: str, batch_size: int, warmup: int, seconds: float) -> dict:
    """(a) The least a training step can do: ids in, padded per column, three forwards, MNR, one step."""
    import numpy as np
    import torch
    import torch.nn.functional as F
    from transformers import AutoModel

    from tasks.training import batches, tokens
    from tasks.training.throughput import training_flops_per_token

    clock = SteadyClock(warmup, seconds)
    st_model, ids = _ids(model_dir, data)
    cuda = torch.cuda.is_available()
    device = "cuda" if cuda else "cpu"
    del st_model
    encoder = AutoModel.from_pretrained(model_dir, attn_implementation="sdpa").to(device)
    encoder.train()
    optimizer = torch.optim.AdamW(encoder.parameters(), lr=2e-5, fused=cuda)
    collator = batches.TokenCollator(table=ids.table, columns=ids.columns, layout=batches.Layout.COLUMNS)
    order = np.random.default_rng(0).permutation(len(ids))

    def embed(input_ids, mask):
        out = encoder(input_ids=input_ids, attention_mask=mask).last_hidden_state
        mask = mask.unsqueeze(-1).to(out.dtype)
        return (out * mask).sum(1) / mask.sum(1)

    def step(rows):
        batch = {k: v.to(device, non_blocking=True) for k, v in collator(rows).items()}
        with torch.autocast(device, dtype=torch.bfloat16, enabled=cuda):
            a, p, n = (embed(batch[f"{c}_input_ids"], batch[f"{c}_attention_mask"]) for c in ids.columns)
            scores = F.normalize(a, dim=-1) @ F.normalize(torch.cat([p, n]), dim=-1).T * 20.0
            loss = F.cross_entropy(scores.float(), torch.arange(len(a), device=device))
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    clock.begin()
    n = 0
    while True:
        start = (n * batch_size) % (len(order) - batch_size)
        step(order[start : start + batch_size].tolist())
        n += 1
        if clock.step(n):
            break
    real = sum(int(v.sum()) for v in tokens.ids_lengths(ids.table).values()) / len(ids)
    return clock.report(batch_size, real) | {
        "padded_tokens_per_real": collator.pad_ratio,
        "flops_per_token": training_flops_per_token(encoder),
        "peak_gib": _memory(),
    }


def bare_trainer(model_dir: str, data: str, batch_size: int, warmup: int, seconds: float) -> dict:
    """(b) The seed notebook's setting through the stock trainer: texts in, tokenised every batch."""
    import pandas as pd
    import torch
    from datasets import Dataset
    from sentence_transformers import SentenceTransformer, SentenceTransformerTrainer, losses
    from sentence_transformers.training_args import SentenceTransformerTrainingArguments

    from tasks.training.throughput import training_flops_per_token

    clock = SteadyClock(warmup, seconds)
    cuda = torch.cuda.is_available()
    model = SentenceTransformer(model_dir)
    frame = pd.read_parquet(data)
    dataset = Dataset.from_pandas(frame, preserve_index=False)
    args = SentenceTransformerTrainingArguments(
        output_dir=f"{data}.bare",
        max_steps=warmup + 1_000_000,  # the clock stops it
        per_device_train_batch_size=batch_size,
        warmup_steps=10,
        learning_rate=5e-5,
        fp16=cuda,
        report_to="none",
        save_strategy="no",
        seed=42,
        use_cpu=not cuda,
    )
    trainer = SentenceTransformerTrainer(
        model=model,
        args=args,
        train_dataset=dataset,
        loss=losses.MultipleNegativesRankingLoss(model),
        callbacks=[trainer_clock(clock)],
    )
    trainer.train()
    from tasks.training import tokens

    table = tokens.tokenize_frame(frame.head(2000), "mnr", model)
    real = sum(int(v.sum()) for v in tokens.ids_lengths(table).values()) / table.num_rows
    return clock.report(batch_size, real) | {
        "padded_tokens_per_real": None,
        "flops_per_token": training_flops_per_token(model),
        "peak_gib": _memory(),
    }


def pipeline(model_dir: str, data: str, config: dict, warmup: int, seconds: float) -> dict:
    """(c) The pipeline's train stage on ids of the tokens stage (tokenising is a cached stage: not timed)."""
    from tasks.evaluation.data import stsb_pairs
    from tasks.training.recipe import recipe_and_runtime
    from tasks.training.tokens import ids_lengths
    from tasks.training.trainer import train_model

    clock = SteadyClock(warmup, seconds)
    _, ids = _ids(model_dir, data)
    recipe, runtime = recipe_and_runtime(**config | {"max_steps": warmup + 1_000_000})  # the clock stops it
    out = Path(f"{data}.{os.getpid()}")
    summary = train_model(model_dir, ids, stsb_pairs("validation"), recipe, runtime, out, [trainer_clock(clock)])
    real = sum(int(v.sum()) for v in ids_lengths(ids.table).values()) / len(ids)
    return clock.report(recipe.batch_size, real) | {
        "padded_tokens_per_real": summary["padded_tokens_per_real"],
        "chunk_cost": summary["chunk_overhead_tokens"],
        "flops_per_token": None,
        "peak_gib": _memory(),
        "batches": summary["batches"],
        "attention": summary["attention"],
        "loss_class": summary["loss_class"],
    }


def input_pipeline(model_dir: str, data: str, batch_size: int, batches_to_time: int) -> dict:
    """Triplets/s delivered to the training step, one process: stock collator against ours."""
    import numpy as np
    import pandas as pd
    from datasets import Dataset
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.base.data_collator import BaseDataCollator

    from tasks.training import batches, tokens

    model = SentenceTransformer(model_dir)
    frame = pd.read_parquet(data)
    order = np.random.default_rng(0).permutation(len(frame))
    picks = [
        order[(i * batch_size) % (len(order) - batch_size) :][:batch_size].tolist() for i in range(batches_to_time)
    ]

    stock_dataset = Dataset.from_pandas(frame, preserve_index=False)
    stock = BaseDataCollator(preprocess_fn=model.preprocess)
    stock_pad = []
    started = time.perf_counter()
    for rows in picks:
        batch = stock(stock_dataset.__getitems__(rows))
        stock_pad.append(
            (
                sum(batch[f"{c}_input_ids"].numel() for c in ("anchor", "positive", "negative")),
                sum(int(batch[f"{c}_attention_mask"].sum()) for c in ("anchor", "positive", "negative")),
            )
        )
    stock_rate = len(picks) * batch_size / (time.perf_counter() - started)

    started = time.perf_counter()
    ids = tokens.TokenizedData(tokens.tokenize_frame(frame, "mnr", model), tokens.tokenizer_spec(model))
    tokenize_seconds = time.perf_counter() - started
    dataset = batches.token_dataset(ids)
    ours = batches.build_collator(model, ids, unpad=True, device="cuda")
    started = time.perf_counter()
    for rows in picks:
        ours(dataset.__getitems__(rows))
    our_rate = len(picks) * batch_size / (time.perf_counter() - started)
    return {
        "stock_triplets_per_second": stock_rate,
        "our_triplets_per_second": our_rate,
        "tokens_stage_seconds": tokenize_seconds,
        "stock_pad_ratio": sum(p for p, _ in stock_pad) / sum(r for _, r in stock_pad),
        "our_pad_ratio": ours.pad_ratio,
        "chunks_overhead_tokens": ours.overhead,
        "rows": len(frame),
    }


def _row(name: str, r: dict, peak: float, model_flops: float | None) -> str:
    flops = r.get("flops_per_token") or model_flops
    mfu = flops * r["tokens_per_second"] / peak if flops else None
    pad = r.get("padded_tokens_per_real")
    return (
        f"| {name} | {r['samples_per_second']:.0f} | {r['tokens_per_second']:.0f} | "
        f"{'n/a' if pad is None else f'{pad:.2f}'} | {'n/a' if mfu is None else f'{100 * mfu:.2f}%'} | "
        f"{'n/a' if r.get('peak_gib') is None else r['peak_gib']} | {r['timed_steps']} | "
        f"{r['startup_seconds']} | {r['warmup_seconds']} |"
    )


def main() -> None:
    import torch

    parser = argparse.ArgumentParser()
    parser.add_argument("--cpu", action="store_true", help="tiny BERT and the input pipeline; no GPU needed")
    parser.add_argument("--seconds", type=float, default=None, help="steady-state window per variant (CUDA: 60)")
    parser.add_argument("--warmup", type=int, default=None, help="steps before the window (CUDA: 20)")
    parser.add_argument("--models", default="bert-base,minilm", help="CUDA: bert-base and/or minilm")
    args = parser.parse_args()
    cuda = torch.cuda.is_available() and not args.cpu
    seconds = args.seconds or (60.0 if cuda else 15.0)
    warmup = args.warmup if args.warmup is not None else (20 if cuda else 3)
    timing = {"warmup": warmup, "seconds": seconds}
    device = torch.cuda.get_device_name(0) if cuda else f"CPU ({os.cpu_count()} cores)"
    peak = isolated(peak_flops, cuda=cuda)["flops"]
    lines = [f"device: {device}; measured matrix-product peak {peak / 1e12:.1f} TFLOP/s ({'bf16' if cuda else 'fp32'})"]
    results: dict = {"device": device, "peak_flops": peak}
    seed = {
        "loss": "mnr",
        "batch_size": 32,
        "precision": "fp16",
        "warmup_steps": 10,
        "eval_steps": 0,
        "checkpoint_steps": 0,
    }
    strong = seed | {
        "batch_size": 256,
        "precision": "bf16",
        "batch_sampler": "no_duplicates",
        "mini_batch_size": -1,
        "learning_rate": 2e-5,
    }
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        data = str(folder / "triplets.parquet")
        triplets_frame(rows=SEED_ROWS).to_parquet(data)
        if cuda:
            from tasks.models.resolve import bundled_minilm_dir

            models = {}
            if "bert-base" in args.models:
                models["bert-base (random init)"] = str(build_bert(folder, BERT_BASE, name="bert-base"))
            if "minilm" in args.models:
                models["all-MiniLM-L6-v2"] = str(bundled_minilm_dir())
        else:
            models = {"tiny BERT (2 x 32)": str(build_bert(folder, TINY_BERT, max_seq_length=128, name="tiny"))}
        for label, model_dir in models.items():
            runs = {
                "(a) raw PyTorch floor, batch 256": isolated(
                    raw_floor, model_dir=model_dir, data=data, batch_size=256, **timing
                ),
                "(b) bare sentence-transformers trainer, seed setting (batch 32)": isolated(
                    bare_trainer, model_dir=model_dir, data=data, batch_size=32, **timing
                ),
                "(c) pipeline, seed setting (batch 32)": isolated(
                    pipeline, model_dir=model_dir, data=data, config=seed, **timing
                ),
                "(c) pipeline, strong (batch 256)": isolated(
                    pipeline, model_dir=model_dir, data=data, config=strong, **timing
                ),
            }
            if cuda:  # what the chunk cost and torch.compile buy, and the stock per-column padding
                for cost in (0, 256, 2048):  # against the cost measured at start-up (the strong row)
                    runs[f"(c) pipeline, strong, chunk cost fixed at {cost} tokens"] = isolated(
                        pipeline, model_dir=model_dir, data=data, config=strong | {"chunk_cost": cost}, **timing
                    )
                runs["(c) pipeline, strong, columns padded (unpad off)"] = isolated(
                    pipeline, model_dir=model_dir, data=data, config=strong | {"unpad": False}, **timing
                )
                runs["(c) pipeline, strong, torch.compile"] = isolated(
                    pipeline, model_dir=model_dir, data=data, config=strong | {"compile": True}, **timing
                )
            flops = runs["(a) raw PyTorch floor, batch 256"]["flops_per_token"]
            lines += [
                f"\n{label}, {warmup} warm-up steps then {seconds:.0f} s timed per variant, "
                f"{SEED_ROWS:,} soft-negative triplets",
                "| variant | triplets/s | real tokens/s | padded/real | MFU | peak GiB | timed steps | start-up s "
                "| warm-up s |",
                "|---|---|---|---|---|---|---|---|---|",
            ]
            lines += [_row(name, r, peak, flops) for name, r in runs.items()]
            floor = runs["(a) raw PyTorch floor, batch 256"]["samples_per_second"]
            ours = runs["(c) pipeline, strong (batch 256)"]["samples_per_second"]
            bare = runs["(b) bare sentence-transformers trainer, seed setting (batch 32)"]["samples_per_second"]
            seed_ours = runs["(c) pipeline, seed setting (batch 32)"]["samples_per_second"]
            lines.append(
                f"strong / raw floor: {ours / floor:.2f}x; "
                f"pipeline seed setting / bare trainer: {seed_ours / bare:.2f}x"
            )
            results[label] = runs
        pipe = None
        if not cuda:
            from tasks.models.resolve import bundled_minilm_dir

            pipe = isolated(
                input_pipeline, model_dir=str(bundled_minilm_dir()), data=data, batch_size=256, batches_to_time=40
            )
            results["input_pipeline"] = pipe
            lines += [
                "\ninput pipeline alone, batch 256, one process, bundled MiniLM tokenizer:",
                f"stock collator (tokenises each batch): {pipe['stock_triplets_per_second']:,.0f} triplets/s, "
                f"padded/real {pipe['stock_pad_ratio']:.2f}",
                f"ours (pads ids of the tokens stage): {pipe['our_triplets_per_second']:,.0f} triplets/s, "
                f"padded/real {pipe['our_pad_ratio']:.3f} (chunk cost {pipe['chunks_overhead_tokens']} tokens, "
                f"as on CUDA without flash attention); tokens stage once: {pipe['tokens_stage_seconds']:.1f} s "
                f"for {pipe['rows']:,} triplets",
            ]
    out = ROOT / "bench" / "results"
    out.mkdir(parents=True, exist_ok=True)
    (out / "training_throughput.json").write_text(json.dumps(results, indent=2, default=str))
    print("\n".join(lines))
    if pipe:
        ratio = pipe["our_triplets_per_second"] / pipe["stock_triplets_per_second"]
        print(f"RESULT input_pipeline_ratio={ratio:.1f} pad_ratio={pipe['our_pad_ratio']:.3f}")


def peak_flops(cuda: bool) -> dict:
    return {"flops": matmul_peak(cuda)}


if __name__ == "__main__":
    main()
