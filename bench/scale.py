"""Benchmark: the whole flow at 10k, 100k and 1M NLI pairs: seconds per 1,000 pairs and peak RSS per stage.

    .venv/bin/python bench/scale.py --sizes 10000 100000 1000000
    .venv/bin/python bench/scale.py --sizes 100000 --compare-workers --encode-cluster local:1 local:2

Each size is one ``train-embeddings run`` in a fresh process and a fresh ``data_dir`` (nothing cached), on
a synthetic NLI file (premise, hypothesis, label; three hypotheses per premise, as MNLI; texts drawn from
the tokenizer's own words, so tokenising and FAISS do real work), with a random 2-layer BERT (hidden 64,
32 tokens) as base and miner, semi-hard negatives, the no-duplicates sampler and a small ``eval_limit``.
A Prefect server started here, before the clock, records each task's start and end; a thread samples the
RSS of the flow process and its children. Training is capped at ``--train-pairs`` pairs (max_steps): its
cost is per trained pair, the other stages' per source pair (mining and tokens see a third of them, the
entailment rows). Targets: per-pair cost at the largest size within 1.3x of the size before it for every
stage; peak RSS under 4 GB. ``--compare-workers``: mining's encoding (40,000 texts of the largest source) with
``encode_cluster`` local:1 against local:2, one thread each, taking turns ``--repeats`` times, best of each;
target 2 workers >= 1.6x as fast as 1.
Results: bench/results/scale.md, scale.json and scale.png.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import psutil
import pyarrow as pa
import pyarrow.parquet as pq

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from bench.data import build_bert  # noqa: E402

CLI = str(Path(sys.executable).parent / "train-embeddings")
RESULTS = ROOT / "bench" / "results"
SHAPE = {"hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 2, "intermediate_size": 128}
BATCH = 64
COST_TARGET, RSS_TARGET_MB, WORKERS_TARGET = 1.3, 4096, 1.6
PER_SOURCE_PAIR = ("load-nli-pairs", "map-labels", "mine-negatives", "tokenize")  # the stages that scale with N


def word_list() -> np.ndarray:
    """Whole words of the uncased BERT vocabulary (no pieces, no specials): real tokens for real texts."""
    from transformers import BertTokenizerFast

    from tasks.models.resolve import bundled_minilm_dir

    vocab = BertTokenizerFast.from_pretrained(str(bundled_minilm_dir())).get_vocab()
    return np.array(sorted(w for w in vocab if w.isalpha() and w.isascii() and len(w) >= 3))


def _hypothesis(premise: list[str], label: int, rng: np.random.Generator, words: np.ndarray) -> str:
    """Entailed: most of the premise's words; neutral: some of them and new ones; contradicted: new words only,
    so even a random encoder ranks the positive above most candidates and semi-hard mining finds negatives."""
    keep = {0: 0.6, 1: 0.3, 2: 0.0}[label]
    kept = [w for w in premise if rng.random() < keep]
    fresh = words[rng.integers(0, len(words), max(2, len(premise) // 2 - len(kept) // 2))].tolist()
    return " ".join(kept + fresh) if label else " ".join(kept or fresh)


def write_nli(path: Path, pairs: int, seed: int = 0, group: int = 65_536) -> Path:
    """``pairs`` NLI rows in row groups: each premise with an entailed, a neutral and a contradicted hypothesis."""
    rng, words = np.random.default_rng(seed), word_list()
    schema = pa.schema([("premise", pa.string()), ("hypothesis", pa.string()), ("label", pa.int64())])
    with pq.ParquetWriter(path, schema, compression="zstd") as writer:
        for start in range(0, pairs, group):
            n = min(group, pairs - start)
            labels = (np.arange(start, start + n) % 3).tolist()
            premise, hypothesis, current = [], [], []
            for label in labels:
                if label == 0 or not current:
                    current = words[rng.integers(0, len(words), int(rng.integers(8, 21)))].tolist()
                premise.append(" ".join(current))
                hypothesis.append(_hypothesis(current, label, rng, words))
            table = pa.table({"premise": premise, "hypothesis": hypothesis, "label": labels}, schema=schema)
            writer.write_table(table)
    return path


class RssSampler(threading.Thread):
    """RSS of a process and all its children, every ``every`` seconds, as (unix time, MB) samples."""

    def __init__(self, pid: int, every: float = 0.1) -> None:
        super().__init__(daemon=True)
        self.process, self.every, self.samples = psutil.Process(pid), every, []
        self.done = threading.Event()

    def run(self) -> None:
        while not self.done.is_set():
            try:
                tree = [self.process, *self.process.children(recursive=True)]
                total = 0
                for proc in tree:
                    try:
                        total += proc.memory_info().rss
                    except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
                        pass  # a child that just ended
                self.samples.append((time.time(), total / 2**20))
            except psutil.NoSuchProcess:
                return
            self.done.wait(self.every)

    def peak(self, start: float, end: float) -> float:
        inside = [mb for t, mb in self.samples if start - self.every <= t <= end + self.every]
        return max(inside, default=float("nan"))


def task_runs(since: float, until: float) -> list[dict]:
    """The task runs the server recorded between two instants: stage name, start, end (unix seconds)."""
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        runs = client.read_task_runs()
    found = []
    for run in runs:
        if run.start_time is None or run.end_time is None:
            continue
        start, end = run.start_time.timestamp(), run.end_time.timestamp()
        if since <= start <= until:
            found.append({"stage": run.name.rsplit("-", 1)[0], "start": start, "end": end})
    return sorted(found, key=lambda r: r["start"])


def run_flow(source: Path, model: Path, data_dir: Path, train_pairs: int, extra: list[str]) -> dict:
    """One ``train-embeddings run``: wall time, per-stage seconds and peak RSS, trained pairs. ``max_steps``
    is at most one epoch of the entailment rows (a third of the source), so no pair trains twice."""
    steps = math.ceil(min(train_pairs, pq.ParquetFile(source).metadata.num_rows // 3) / BATCH)
    from prefect.settings import PREFECT_API_URL

    params = {"loss": "mnr", "negatives": "semi-hard", "nli_source": str(source), "max_pairs": None,
              "base_model": str(model), "miner_model": str(model), "epochs": 1, "batch_size": BATCH,
              "warmup_steps": 10, "eval_steps": 0, "checkpoint_steps": 0, "max_steps": steps,
              "batch_sampler": "no_duplicates", "margin": -1.0, "eval_limit": 100, "eval_tasks": [],
              "compare_exports": False, "data_dir": str(data_dir)}  # fmt: skip
    # margin -1: a random encoder scores every text alike (cosine ~0.99), so any margin would admit no candidate
    args = [a for k, v in params.items() for a in ("-p", f"{k}={json.dumps(v) if not isinstance(v, str) else v}")]
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")} | {
        "PREFECT_API_URL": PREFECT_API_URL.value(),
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "HF_HUB_OFFLINE": "1",
        "HF_DATASETS_OFFLINE": "1",
        "TRAIN_EMBEDDINGS_CACHE": str(data_dir / "cache"),
    }
    log = (data_dir.parent / f"{data_dir.name}.log").open("w")
    started = time.time()
    child = subprocess.Popen([CLI, "run", *args, *extra], cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    sampler = RssSampler(child.pid)
    sampler.start()
    code = child.wait()
    sampler.done.set()
    sampler.join()
    ended = time.time()
    log.close()
    if code != 0:
        raise SystemExit(f"run failed ({code}); log: {log.name}\n{Path(log.name).read_text()[-4000:]}")
    stages: dict[str, dict] = {}
    for run in task_runs(started, ended):
        stage = stages.setdefault(run["stage"], {"seconds": 0.0, "peak_rss_mb": 0.0})
        stage["seconds"] += run["end"] - run["start"]
        stage["peak_rss_mb"] = max(stage["peak_rss_mb"], sampler.peak(run["start"], run["end"]))
    from tasks.store.artifacts import read_manifest

    trained = None
    for folder in (data_dir / "artifacts" / "models").glob("*/"):
        summary = (read_manifest(folder) or {}).get("training") or {}
        if "steps" in summary:
            trained = min(summary["steps"] * BATCH, summary["rows"])
    search = {}
    for folder in (data_dir / "artifacts" / "triplets").glob("*/"):  # the index mining searched, and its recall
        search = {k: (read_manifest(folder) or {}).get("search", {}).get(k) for k in ("index", "recall_at_10")}
    return {"wall_s": ended - started, "peak_rss_mb": max(mb for _, mb in sampler.samples), "stages": stages,
            "trained_pairs": trained, "search": search}  # fmt: skip


def per_1k(result: dict, pairs: int, stage: str) -> tuple[float, int]:
    """Seconds per 1,000 pairs of a stage, and the pairs it is counted per (training: the pairs it trained)."""
    count = result["trained_pairs"] if stage == "train-model" and result["trained_pairs"] else pairs
    return result["stages"][stage]["seconds"] / count * 1000, count


def table(results: dict[int, dict]) -> tuple[str, list[tuple[str, bool]]]:
    """The Markdown table and the targets met or missed."""
    sizes = sorted(results)
    names = list(dict.fromkeys(s for n in sizes for s in results[n]["stages"]))
    lines = ["| stage | " + " | ".join(f"{n:,} pairs: s/1k (per) · peak RSS MB" for n in sizes) + " | cost ratio |",
             "|---|" + "---|" * (len(sizes) + 1)]  # fmt: skip
    checks: list[tuple[str, bool]] = []
    for name in names:
        cells, costs = [], []
        for n in sizes:
            if name not in results[n]["stages"]:
                cells.append("–")
                continue
            cost, count = per_1k(results[n], n, name)
            costs.append(cost)
            cells.append(f"{cost:.4f} ({count:,}) · {results[n]['stages'][name]['peak_rss_mb']:.0f}")
        ratio = costs[-1] / costs[-2] if len(costs) >= 2 and costs[-2] > 0 else None
        if ratio is not None:
            checks.append((f"{name}: cost per pair {ratio:.2f}x (<= {COST_TARGET}x)", ratio <= COST_TARGET))
        lines.append(f"| {name} | " + " | ".join(cells) + f" | {'–' if ratio is None else f'{ratio:.2f}x'} |")
    walls = " | ".join(f"{results[n]['wall_s']:.0f} s · {results[n]['peak_rss_mb']:.0f}" for n in sizes)
    lines.append(f"| whole run (wall s · peak RSS MB) | {walls} | |")
    searched = [results[n].get("search") or {} for n in sizes]
    found = " | ".join(f"{s.get('index')}, recall@10 {s.get('recall_at_10')}" for s in searched)
    lines.append(f"| mining's index | {found} | |")
    peak = results[sizes[-1]]["peak_rss_mb"]
    checks.append((f"peak RSS at {sizes[-1]:,}: {peak:.0f} MB (< {RSS_TARGET_MB} MB)", peak < RSS_TARGET_MB))
    return "\n".join(lines), checks


def plot(results: dict[int, dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8.5, 4.5))
    sizes = sorted(results)
    for name in dict.fromkeys(s for n in sizes for s in results[n]["stages"]):
        ran = [n for n in sizes if name in results[n]["stages"]]  # training at the run's size, costed per pair trained
        label = f"{name} (per pair trained)" if name == "train-model" else name
        ax.plot(ran, [per_1k(results[n], n, name)[0] for n in ran], marker="o", label=label)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("source pairs of the run")
    ax.set_ylabel("seconds per 1,000 pairs")
    ax.set_title("flow cost per pair by stage")
    ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5))  # beside the lines, never over them
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def compare_workers(source: Path, model: Path, root: Path, clusters: list[str], texts: int = 40_000,
                    repeats: int = 3) -> list[str]:  # fmt: skip
    """Encoding alone (``encode_cached``, as mining calls it) of the same ``texts`` distinct texts of the source
    with each ``encode_cluster`` (single-threaded workers), each time into an empty cache; the first is the
    reference. The model is loaded on the workers before the clock (timed apart: a fixed cost per encoding, not
    per text). The clusters take turns ``repeats`` times and each keeps its best time (timeit's rule): on 2 shared
    cores one run's time moves by a quarter, and taking turns spreads any drift over both."""
    from tasks.cluster.connection import connected
    from tasks.cluster.encoding import model_on_cluster
    from tasks.models.resolve import resolve_model
    from tasks.negatives.embeddings import encode_cached, mining_precision

    table = pq.read_table(source, columns=["premise", "hypothesis"])
    chosen = list(dict.fromkeys([*table.column("premise").to_pylist(), *table.column("hypothesis").to_pylist()]))
    chosen, miner = chosen[:texts], resolve_model(str(model))
    runs: dict[str, list[float]] = {c: [] for c in clusters}
    loads: dict[str, list[float]] = {c: [] for c in clusters}
    for turn in range(repeats):
        for i, cluster in enumerate(clusters):
            data_dir = root / f"workers-{i}-{turn}"
            with connected(cluster, str(data_dir)) as connection:
                start = time.perf_counter()
                with model_on_cluster(connection, miner, mining_precision()):  # loaded once, for both calls
                    encode_cached(str(data_dir / "warm"), miner, chosen[:512])  # the load, apart
                    loads[cluster].append(time.perf_counter() - start)
                    start = time.perf_counter()
                    _, encoded = encode_cached(str(data_dir), miner, chosen)
                    runs[cluster].append(time.perf_counter() - start)
            print(f"encode_cluster={cluster}, turn {turn + 1}: {encoded:,} texts in {runs[cluster][-1]:.1f} s "
                  f"(the model's load and 512 texts before: {loads[cluster][-1]:.1f} s)", flush=True)  # fmt: skip
    best = {c: min(times) for c, times in runs.items()}
    first, last = best[clusters[0]], best[clusters[-1]]
    ok = first / last >= WORKERS_TARGET
    lines = [f"| encode_cluster | s for {len(chosen):,} texts (best of {repeats}) | every turn | speed-up | "
             "the model's load on the workers and 512 texts, apart (s) |", "|---|---|---|---|---|"]  # fmt: skip
    lines += [f"| {c} | {best[c]:.1f} | {', '.join(f'{t:.1f}' for t in runs[c])} | {first / best[c]:.2f}x | "
              f"{', '.join(f'{t:.1f}' for t in loads[c])} |" for c in clusters]  # fmt: skip
    verdict = f"{clusters[-1]} >= {WORKERS_TARGET}x as fast as {clusters[0]}: {'PASS' if ok else 'FAIL'}"
    return [*lines, "", verdict]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000, 1_000_000])
    parser.add_argument("--train-pairs", type=int, default=20_000, help="training cap (max_steps x batch 64)")
    parser.add_argument("--compare-workers", action="store_true", help="encoding with each --encode-cluster")
    parser.add_argument("--encode-cluster", nargs="+", default=["local:1", "local:2"])
    parser.add_argument("--repeats", type=int, default=3, help="turns of the workers' comparison (best of each)")
    parser.add_argument("--keep", type=Path, default=None, help="work folder to keep (default: a temporary one)")
    args = parser.parse_args()
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    from prefect.testing.utilities import prefect_test_harness

    RESULTS.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="bench-scale-") as tmp, prefect_test_harness(server_startup_timeout=120):
        root = args.keep or Path(tmp)
        root.mkdir(parents=True, exist_ok=True)
        model = build_bert(root, SHAPE, max_seq_length=32, name="tiny-bert")
        results, out = {}, []
        for size in sorted(args.sizes):
            source = write_nli(root / f"nli-{size}.parquet", size)
            results[size] = run_flow(source, model, root / f"run-{size}", args.train_pairs, [])
            print(f"{size:,} pairs: {results[size]['wall_s']:.0f} s, peak {results[size]['peak_rss_mb']:.0f} MB",
                  flush=True)  # fmt: skip
            (RESULTS / "scale.json").write_text(json.dumps(results, indent=2))
        markdown, checks = table(results)
        out += [markdown, "", f"training capped at {args.train_pairs:,} pairs (max_steps, batch {BATCH}): its "
                "cost is per pair trained; the other stages' per source pair", ""]  # fmt: skip
        out += [f"- {'PASS' if ok else 'FAIL'}: {text}" for text, ok in checks]
        if args.compare_workers:
            source = root / f"nli-{max(args.sizes)}.parquet"
            out += ["", *compare_workers(source, model, root, args.encode_cluster, repeats=args.repeats)]
        if len(results) > 1:
            plot(results, RESULTS / "scale.png")
    text = "\n".join(out)
    print(text)
    (RESULTS / "scale.md").write_text(text + "\n")
    return 0 if all(ok for _, ok in checks) else 1


if __name__ == "__main__":
    raise SystemExit(main())
