"""Benchmark: the ``make run`` setting on a local folder against the same run on an object store on loopback.

    .venv/bin/python bench/store.py                 # make run's setting: the bundled sample, semi-hard, MiniLM
    .venv/bin/python bench/store.py --max-pairs 400 # a quicker, smaller run

Four runs of ``train-embeddings run`` in one invocation, each a fresh process with its own Prefect home:

1. cold, ``data_dir`` a local folder (the reference);
2. cold, ``data_dir`` an ``s3://`` URL on a SeaweedFS server on 127.0.0.1 (a fresh bucket, a fresh cache);
3. warm, the same URL from the same cache (a re-run on the machine that built it);
4. warm, the same URL from an empty cache (another machine: everything pulled from the store).

Targets: cold on the store <= 1.1x cold local; warm (both kinds) <= 0.5x cold on the store.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from tests.object_store import SeaweedFS  # noqa: E402  (the tests' real S3 server)

CLI = str(Path(sys.executable).parent / "train-embeddings")
COLD_TARGET, WARM_TARGET = 1.1, 0.5


def timed_run(data_dir: str, home: Path, env: dict[str, str], extra: list[str]) -> float:
    home.mkdir(parents=True, exist_ok=True)
    run_env = (
        {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
        | env
        | {
            "PREFECT_HOME": str(home / "prefect"),
            "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
            "HF_HUB_DISABLE_TELEMETRY": "1",
            "HF_HUB_OFFLINE": "1",
        }
    )
    started = time.perf_counter()
    done = subprocess.run([CLI, "run", "-p", "negatives=semi-hard", "-p", f"data_dir={data_dir}", *extra],
                          cwd=ROOT, env=run_env, capture_output=True, text=True)  # fmt: skip
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"run on {data_dir} failed:\n{done.stdout[-2000:]}\n{done.stderr[-4000:]}")
    return seconds


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--max-pairs", type=int, default=None, help="fewer pairs, for a quick look")
    args = parser.parse_args()
    extra = [] if args.max_pairs is None else ["-p", f"max_pairs={args.max_pairs}"]
    with tempfile.TemporaryDirectory(prefix="bench-store-") as tmp, SeaweedFS(Path(tmp) / "s3") as server:
        root = Path(tmp)
        bucket = server.make_bucket("bench-store")
        store_env = server.env()
        url = f"s3://{bucket}/team"
        local = timed_run(str(root / "local"), root / "m-local", {"TRAIN_EMBEDDINGS_CACHE": str(root / "c0")}, extra)
        print(f"cold, local folder:            {local:7.1f} s", flush=True)
        machine = store_env | {"TRAIN_EMBEDDINGS_CACHE": str(root / "c1")}
        cold = timed_run(url, root / "m1", machine, extra)
        print(f"cold, object store:            {cold:7.1f} s  ({cold / local:.2f}x local)", flush=True)
        warm = timed_run(url, root / "m1", machine, extra)
        print(f"warm, same machine:            {warm:7.1f} s  ({warm / cold:.2f}x cold)", flush=True)
        other = timed_run(url, root / "m2", store_env | {"TRAIN_EMBEDDINGS_CACHE": str(root / "c2")}, extra)
        print(f"warm, another machine (empty): {other:7.1f} s  ({other / cold:.2f}x cold)", flush=True)
    ok = cold / local <= COLD_TARGET and max(warm, other) / cold <= WARM_TARGET
    print(f"targets: cold <= {COLD_TARGET}x local, warm <= {WARM_TARGET}x cold: {'met' if ok else 'MISSED'}")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
