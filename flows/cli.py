"""The `train-embeddings` command: run the flow locally, or inspect the artifacts runs left behind.

train-embeddings run -p loss=mnr -p negatives=semi-hard
train-embeddings inspect                 # every artifact: stage, key, rows, size, created, parents
train-embeddings inspect triplets/<key>  # one artifact: manifest, schema, first rows, distribution
train-embeddings inspect releases/<key>  # a release: its model card (lineage) and files
train-embeddings export champion --format onnx --format static   # serving formats, each a keyed artifact
train-embeddings push champion --repo org/name --format onnx     # model, card and exports to the Hub
train-embeddings champion [--restore]   # the champion's record, checked; or the previous one put back
train-embeddings gc [--dry-run]          # remove what no recent run, nor the champion, nor a live run needs

--data-dir is a folder or a store URL (s3://bucket/prefix): inspect and gc then look at the store itself.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

from flows.inspection import show_list, show_one
from tasks.store import cleanup, leases, remote, store_cleanup
from tasks.store.artifacts import artifacts_root, read_manifest
from tasks.store.catalog import PAIRS_FILE, TRIPLETS_FILE
from tasks.store.champion import ChampionDamaged, check_champions, read_champion, restore_champion
from tasks.store.runs import RunRecord


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


def ship(args: argparse.Namespace) -> int:
    """``export``: the formats as keyed artifacts; ``push``: checks first (repo, hub, token), then the release
    the flow would make (exports measured against the model, those out of tolerance left out; the card), the
    upload, and the push record the flow reads, so the flow never publishes the same model there again."""
    from tasks.evaluation.settings import EvalSettings
    from tasks.shipping import card, exports, publish, release
    from tasks.shipping.references import model_reference
    from tasks.store import environment

    formats = exports.check_formats(args.format or [], "--format")
    if args.command == "export" and not formats:
        raise ValueError(f"--format: name at least one of {list(exports.FORMATS)}")
    token = publish.ready_to_push(args.repo, args.token_block) if args.command == "push" else None
    reference = model_reference(args.model, args.data_dir)
    parents = [reference.artifact] if reference.artifact else []
    if args.command == "export":
        for fmt in formats:
            ref = release.export_artifact(reference.model, fmt, args.data_dir, parents)
            print(f"{fmt:>14}: {ref.folder / 'model'}  ({'cached' if ref.cached else 'exported'})")
        return 0
    manifest = (read_manifest(reference.artifact.folder) or {}) if reference.artifact else {}
    lineage = card.lineage_from_run(reference.run, read_champion(args.data_dir),
                                    manifest.get("environment") or environment.describe())  # fmt: skip
    settings = None
    if not args.no_compare:  # measured the way its run evaluated it (a model with no run: the default settings)
        settings = EvalSettings.from_record(reference.run.evaluation) if reference.run else EvalSettings()
    shipment = release.ship(reference.model, formats, lineage, args.data_dir, settings, parents)
    for fmt, ref in shipment.exports.items():
        note = "  LEFT OUT: its scores moved beyond its tolerance" if fmt in shipment.left_out else ""
        print(f"{fmt:>14}: {ref.folder / 'model'}  ({'cached' if ref.cached else 'exported'}){note}")
    if shipment.comparison is not None:
        print(f"{'comparison':>14}: {shipment.comparison.folder / 'comparison.md'}")
    print(f"{'release':>14}: {shipment.folder}")
    missing = card.missing_fields(shipment.folder)
    if missing:
        print(
            f"warning: the model card lacks {missing}: no run in {args.data_dir} records how this model was "
            "made (a model trained by the flow has them)",
            file=sys.stderr,
        )
    model_key = reference.artifact.key if reference.artifact else None
    url = publish.publish_release(shipment.folder, args.data_dir, args.repo, model_key, shipment.release.key,
                                  private=args.private, token=token)  # fmt: skip
    print(f"{'pushed':>14}: {url}")
    return 0


def champion_command(args: argparse.Namespace) -> int:
    """The champion's record, checked; with ``--restore``, the previous record put back in its place."""
    try:
        if args.restore:
            record = restore_champion(args.data_dir, args.slot)
            print(f"restored the previous champion record: {record['model_key']} ({record['metric']} "
                  f"{record['score']:.4f}, promoted {record.get('promoted_at')})")  # fmt: skip
            return 0
        record = read_champion(args.data_dir, args.slot)
    except ValueError as exc:  # ChampionDamaged, or nothing sound to restore
        print(f"train-embeddings champion: {exc}", file=sys.stderr)
        return 2
    if record is None:
        print(f"no champion yet in {remote.public_path(artifacts_root(args.data_dir))}")
        return 0
    print(json.dumps({k: v for k, v in record.items() if k != "previous"}, indent=2, default=str))
    return 0


def gc_command(args: argparse.Namespace) -> int:
    """Remove what nothing needs: from a local folder; from a URL store itself, then from this machine's mirror."""
    try:
        check_champions(args.data_dir)  # gc keeps what the champion names: never guess it
    except ChampionDamaged as exc:
        print(f"train-embeddings gc: refused: {exc}", file=sys.stderr)
        return 2
    store = remote.store_of(args.data_dir)
    doomed = store_cleanup.unreferenced(args.data_dir, args.keep_runs, args.min_age_hours) if store else []
    stale = cleanup.unreferenced(args.data_dir, args.keep_runs, args.min_age_hours, args.keep_partial_hours)
    for name in [*(d.url for d in doomed), *map(str, stale)]:
        print(("would remove " if args.dry_run else "removing ") + name)
    if args.dry_run:
        return 0
    freed = store_cleanup.remove(args.data_dir, doomed, args.keep_runs, args.min_age_hours) if doomed else 0
    local = cleanup.remove(stale, args.keep_partial_hours, keep_runs=args.keep_runs)
    where = f" ({freed / 1e6:.1f} MB from the store, {local / 1e6:.1f} MB from its mirror here)" if store else ""
    print(f"freed {(freed + local) / 1e6:.1f} MB{where}")
    return 0


def store_command(args: argparse.Namespace) -> int:
    """A command reading ``--data-dir``: checked first (a URL store that works with these credentials), in its
    normal form; a bad one exits 2 like any bad input, a store failing on the way 1."""
    writes = args.command in ("export", "push", "gc") or getattr(args, "restore", False)
    try:
        remote.check(args.data_dir, write=writes and not getattr(args, "dry_run", False))
    except ValueError as exc:
        print(f"train-embeddings {args.command}: {exc}", file=sys.stderr)
        return 2
    args.data_dir = remote.normalise(args.data_dir)
    try:
        if args.command in ("export", "push"):
            return ship_command(args)
        if args.command == "champion":
            return champion_command(args)
        if args.command == "gc":
            return gc_command(args)
        if args.ref:
            show_one(args.data_dir, args.ref, args.rows)
            return 0
        return show_list(args.data_dir, args.verify)
    except remote.StoreError as exc:
        print(f"train-embeddings {args.command}: {exc}", file=sys.stderr)
        return 1


def ship_command(args: argparse.Namespace) -> int:
    """``export`` / ``push`` under a lease, so gc keeps what they read; what they cannot find or do exits 2."""
    from tasks.models.resolve import ModelError
    from tasks.shipping.exports import ExportError
    from tasks.shipping.publish import PublishError

    try:
        with leases.held(args.data_dir):  # what export / push read stays while they read it
            return ship(args)
    except (ModelError, ExportError, PublishError, ValueError) as exc:
        print(f"train-embeddings {args.command}: {exc}", file=sys.stderr)
        return 2


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="train-embeddings", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run the train-embeddings flow in this process")
    run.add_argument("-p", "--param", action="append", default=[], help="flow parameter name=value")
    inspect = sub.add_parser("inspect", help="list artifacts, or show one (stage/key)")
    inspect.add_argument("ref", nargs="?", help="stage/key of one artifact")
    inspect.add_argument("--data-dir", default="data")
    inspect.add_argument("--rows", type=int, default=5)
    inspect.add_argument(
        "--verify",
        action="store_true",
        help="on a store URL, also read every file back and check its sha256 (a local folder's always are)",
    )
    champion = sub.add_parser("champion", help="show the champion's record, or restore the previous one")
    champion.add_argument("--data-dir", default="data")
    champion.add_argument("--slot", default="champion")
    champion.add_argument("--restore", action="store_true", help="put the previous record back (a damaged one)")
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
    for name, text in (("export", "write serving formats of a model"), ("push", "publish a model to the Hub")):
        command = sub.add_parser(name, help=text)
        command.add_argument("model", help="models/<key>, champion, or a sentence-transformers folder")
        command.add_argument("--format", action="append", help="onnx, onnx-int8, openvino, openvino-int8, static")
        command.add_argument("--data-dir", default="data")
        if name == "push":
            command.add_argument("--repo", required=True, help="<owner>/<name> on the Hugging Face Hub")
            command.add_argument("--private", action="store_true")
            command.add_argument(
                "--token-block", default="hf-token", help="Prefect Secret with the token (else HF_TOKEN)"
            )
            command.add_argument(
                "--no-compare",
                action="store_true",
                help="release the exports without measuring them against the model (the flow's compare_exports)",
            )
    args = parser.parse_args(argv)  # (Prefect's server start timeout: flows/__init__.py)

    if args.command != "run":
        return store_command(args)

    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")  # no telemetry unless asked
    os.environ.setdefault("DO_NOT_TRACK", "1")
    from flows.train_embeddings import train_embeddings

    record = RunRecord.from_dict(train_embeddings(**parse_params(args.param)))
    print("\n== train-embeddings finished")
    for name, ref in record.artifacts.named().items():
        print(f"{name:>16}: {ref.path}  ({ref.rows} rows, {'cached' if ref.cached else 'computed'})")
    print(f"{'model':>16}: {record.model_path}")
    print(f"{'release':>16}: {record.release_path}  (model, card, exports)")
    for metric, pair in record.metrics.items():
        print(f"{metric:>28}: {pair['base']:.4f} → {pair['trained']:.4f}")
    print(f"{'run record':>16}: {record.path}")
    data = record.artifacts.training_data
    parquet = data.folder / (TRIPLETS_FILE if data.stage == "triplets" else PAIRS_FILE)
    print(f"\nopen one with:  python -c \"import pandas as pd; print(pd.read_parquet('{parquet}'))\"")
    return 0


if __name__ == "__main__":
    sys.exit(main())
