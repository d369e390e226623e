"""The `train-embeddings` command: run the flow locally, or inspect the artifacts runs left behind.

train-embeddings run -p loss=mnr -p negatives=semi-hard
train-embeddings inspect                 # every artifact: stage, key, rows, size, created, parents
train-embeddings inspect triplets/<key>  # one artifact: manifest, schema, first rows, distribution
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import pandas as pd

from tasks.store import cleanup
from tasks.store.artifacts import artifacts_root, list_artifacts, read_manifest


def parse_params(items: list[str]) -> dict:
    """``name=value`` pairs; values are read as JSON when they parse (numbers, null), else as text."""
    params = {}
    for item in items:
        name, sep, value = item.partition("=")
        if not sep:
            raise SystemExit(f"-p expects name=value, got {item!r}")
        try:
            params[name] = json.loads(value)
        except ValueError:
            params[name] = value
    return params


def show_list(data_dir: str) -> None:
    rows = list_artifacts(data_dir)
    if not rows:
        print(f"no artifacts under {artifacts_root(data_dir)}")
        return
    table = pd.DataFrame(rows).drop(columns=["path"])
    with pd.option_context("display.max_rows", None, "display.width", 200, "display.max_colwidth", 60):
        print(table.to_string(index=False))


def show_one(data_dir: str, ref: str, rows: int) -> None:
    folder = artifacts_root(data_dir) / ref
    manifest = read_manifest(folder)
    if manifest is None:
        raise SystemExit(f"{folder}: no such artifact (see `train-embeddings inspect` for the list)")
    shown = ("stage", "key", "rows", "created", "params", "parents", "environment")
    print(json.dumps({k: manifest.get(k) for k in shown}, indent=2))
    if manifest.get("stage") == "tokens":
        show_tokens(folder, manifest, rows)
        return
    for path in sorted(folder.rglob("*.parquet")):
        df = pd.read_parquet(path)
        print(f"\n== {path.relative_to(folder)}: {len(df)} rows")
        print(df.dtypes.to_string())
        with pd.option_context("display.width", 200, "display.max_colwidth", 50):
            print(df.head(rows).to_string())
        for column in ("label", "score"):
            if column in df:
                print(f"\n{column} distribution:\n{df[column].value_counts().sort_index().to_string()}")
        for column in ("positive_score", "negative_score", "value"):
            if column in df and pd.api.types.is_numeric_dtype(df[column]):
                print(f"\n{column}: {df[column].describe().round(4).to_dict()}")


def show_tokens(folder: Path, manifest: dict, rows: int) -> None:
    """Token ids read back as text with the base model's tokenizer, beside their lengths and statistics."""
    print(f"\ntokenizer: {json.dumps(manifest.get('tokenizer'))}")
    stats = pd.DataFrame.from_dict(manifest.get("columns", {}), orient="index")
    print(f"\n== tokens per text, by column\n{stats.to_string()}")
    tokenizer = None
    try:
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(manifest["base_model"]["location"])
    except Exception as exc:  # the base model's folder may be gone: show the ids instead
        print(f"(cannot load the tokenizer to decode: {type(exc).__name__})")
    df = pd.read_parquet(folder / "tokens.parquet").head(rows)
    print(f"\n== tokens.parquet, first {len(df)} rows (length: decoded ids)")
    for i, row in df.iterrows():
        for column, ids in row.items():
            if column.endswith("_input_ids"):
                text = tokenizer.decode(ids) if tokenizer else str(list(ids))
                print(f"{i:>4} {column:<22} {len(ids):>4}: {text[:110]}")
            else:
                print(f"{i:>4} {column:<22} {ids}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="train-embeddings", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run the train-embeddings flow in this process")
    run.add_argument("-p", "--param", action="append", default=[], help="flow parameter name=value")
    inspect = sub.add_parser("inspect", help="list artifacts, or show one (stage/key)")
    inspect.add_argument("ref", nargs="?", help="stage/key of one artifact")
    inspect.add_argument("--data-dir", default="data")
    inspect.add_argument("--rows", type=int, default=5)
    gc = sub.add_parser("gc", help="remove artifacts no recent run (nor the champion) refers to")
    gc.add_argument("--data-dir", default="data")
    gc.add_argument("--keep-runs", type=int, default=5, help="keep what the last N runs used")
    gc.add_argument("--min-age-hours", type=float, default=24.0, help="never remove anything used more recently")
    gc.add_argument(
        "--keep-partial-hours",
        type=float,
        default=cleanup.KEEP_PARTIAL_HOURS,
        help="keep an interrupted training's folder while its last sealed checkpoint is younger",
    )
    gc.add_argument("--dry-run", action="store_true")
    args = parser.parse_args(argv)

    if args.command == "gc":
        stale = cleanup.unreferenced(args.data_dir, args.keep_runs, args.min_age_hours, args.keep_partial_hours)
        for path in stale:
            print(("would remove " if args.dry_run else "removing ") + str(path))
        if not args.dry_run:
            print(f"freed {cleanup.remove(stale, args.keep_partial_hours) / 1e6:.1f} MB")
        return 0

    if args.command == "inspect":
        (show_one(args.data_dir, args.ref, args.rows) if args.ref else show_list(args.data_dir))
        return 0

    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")  # no telemetry unless asked
    os.environ.setdefault("DO_NOT_TRACK", "1")
    from flows.train_embeddings import train_embeddings

    summary = train_embeddings(**parse_params(args.param))
    print("\n== train-embeddings finished")
    for step, ref in summary["artifacts"].items():
        print(f"{step:>16}: {ref['path']}  ({ref['rows']} rows, {'cached' if ref['cached'] else 'computed'})")
    print(f"{'model':>16}: {summary['model_path']}")
    for metric, pair in summary["metrics"].items():
        print(f"{metric:>28}: {pair['base']:.4f} → {pair['trained']:.4f}")
    print(f"{'run record':>16}: {summary['run_record']}")
    data = Path(summary["artifacts"]["train-data"]["path"])
    parquet = data / ("triplets.parquet" if (data / "triplets.parquet").exists() else "pairs.parquet")
    print(f"\nopen one with:  python -c \"import pandas as pd; print(pd.read_parquet('{parquet}'))\"")
    return 0


if __name__ == "__main__":
    sys.exit(main())
