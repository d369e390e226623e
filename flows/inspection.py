"""What ``train-embeddings inspect`` shows: every artifact checked against its manifest, or one artifact's
manifest, schema, first rows and distributions (token ids read back as text, a release's card).

On a URL store it shows what the store holds, whatever this machine's mirror has: the list is read from one
listing of the store and its manifests (each file's size checked against the manifest; its sha256 too with
``--verify``, which reads every byte), and one artifact is checked byte for byte and pulled into the mirror to
be shown."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pandas as pd

from tasks.store import remote, store_cleanup, transfer
from tasks.store.artifacts import ArtifactRef, artifacts_root, list_artifacts, read_manifest, verify
from tasks.store.catalog import TOKENS_FILE


def damage(row: dict) -> str:
    """``ok``, or the files of an artifact whose bytes no longer match its manifest's checksums."""
    damaged = verify(ArtifactRef(row["stage"], row["key"], row["path"]))
    return "ok" if not damaged else "DAMAGED: " + ", ".join(damaged)


def store_sha256(store: remote.Store, path: str) -> str | None:
    """The sha256 of an object's bytes, streamed (None when it is gone)."""
    digest = hashlib.sha256()
    try:
        with store.fs.open(path, "rb", block_size=1 << 23) as handle:
            for block in iter(lambda: handle.read(1 << 23), b""):
                digest.update(block)
    except FileNotFoundError:
        return None
    return digest.hexdigest()


def store_damage(store: remote.Store, name: str, manifest: dict, present: dict[str, dict], check_bytes: bool) -> str:
    """``ok``, or the files of the store's artifact ``name`` (stage/key) that are missing, of another size than its
    manifest lists, or (``check_bytes``) of other bytes."""
    files = manifest["files"]
    damaged = [rel for rel, info in files.items() if (present.get(rel) or {}).get("size") != info["bytes"]]
    if check_bytes:
        root = f"{store.root}/artifacts/{name}"
        damaged += [rel for rel, info in files.items()
                    if rel not in damaged and store_sha256(store, f"{root}/{rel}") != info["sha256"]]  # fmt: skip
    return "ok" if not damaged else "DAMAGED: " + ", ".join(sorted(damaged))


def store_rows(store: remote.Store, check_bytes: bool) -> list[dict]:
    """One row per artifact of the store (from its listing and manifests, not from the mirror), checked."""
    objects = store_cleanup.listing(store)
    files = store_cleanup.artifact_files(objects)
    rows = []
    for name, (_, manifest) in sorted(store_cleanup.manifests_in(store, objects).items()):
        stage, key = name.split("/")
        check = "DAMAGED: manifest.json" if manifest is None else store_damage(store, name, manifest, files[name],
                                                                               check_bytes)  # fmt: skip
        manifest = manifest or {"parents": []}
        rows.append(
            {
                "stage": stage,
                "key": key,
                "rows": manifest.get("rows"),
                "bytes": sum(info["size"] for info in files[name].values()),
                "created": manifest.get("created"),
                "parents": ",".join(f"{p['stage']}/{p['key']}" for p in manifest["parents"]),
                "path": f"{store.url}/artifacts/{name}",
                "check": check,
            }
        )
    return rows


def show_list(data_dir: str, check_bytes: bool = False) -> int:
    """Every artifact, each checked against its manifest's checksums; 1 when any is damaged. On a URL store,
    the store's artifacts (their sizes checked; their bytes too with ``check_bytes``)."""
    store = remote.store_of(data_dir)
    rows = list_artifacts(data_dir) if store is None else store_rows(store, check_bytes)
    if not rows:
        print(f"no artifacts under {remote.public_path(artifacts_root(data_dir))}")
        return 0
    table = pd.DataFrame(rows)
    if store is None:
        table["check"] = [damage(row) for row in rows]
    with pd.option_context("display.max_rows", None, "display.width", 200, "display.max_colwidth", 60):
        print(table.drop(columns=["path"]).to_string(index=False))
    if store is not None and not check_bytes:
        print("(in the store: each file's size checked against its manifest; --verify reads every byte back)")
    damaged = table[table["check"] != "ok"]
    for row in damaged.itertuples():
        print(f"damaged: {row.stage}/{row.key} ({row.check.removeprefix('DAMAGED: ')}): the next run rebuilds it")
    return 1 if len(damaged) else 0


def pulled(store: remote.Store, folder: Path) -> str:
    """Check the store's artifact at ``folder`` byte for byte and bring it into the mirror: ``ok``, or what is
    damaged in the store (the mirror keeps what it had)."""
    name = f"{folder.parent.name}/{folder.name}"
    objects = store_cleanup.listing(store, f"{name}/")
    found = store_cleanup.manifests_in(store, objects)
    if name not in found:
        raise SystemExit(f"{store.url}/artifacts/{name}: no such artifact in the store (see `train-embeddings "
                         "inspect` for the list)")  # fmt: skip
    manifest = found[name][1]
    if manifest is None:
        return "DAMAGED: manifest.json"
    mirrored = read_manifest(folder) is not None and not verify(
        ArtifactRef(folder.parent.name, folder.name, str(folder))
    )
    if not mirrored and transfer.pull_artifact(folder):  # every file checked against the manifest on its way
        return "ok"
    present = store_cleanup.artifact_files(objects).get(name, {})
    return store_damage(store, name, manifest, present, check_bytes=True)


def show_one(data_dir: str, ref: str, rows: int) -> None:
    folder = artifacts_root(data_dir) / ref
    store = remote.store_of(data_dir)
    if store is not None and (check := pulled(store, folder)) != "ok":
        print(f"{store.url}/artifacts/{ref}\n\ncheck: {check}")
        print("(its files are not shown: the next run that needs this artifact rebuilds it, and uploads it again)")
        return
    manifest = read_manifest(folder)
    if manifest is None:
        raise SystemExit(f"{folder}: no such artifact (see `train-embeddings inspect` for the list)")
    shown = ("stage", "key", "rows", "created", "params", "parents", "environment")
    print(json.dumps({k: manifest.get(k) for k in shown}, indent=2))
    check = damage({"stage": manifest.get("stage"), "key": manifest.get("key"), "path": str(folder)})
    print(f"\ncheck: {check}")
    if check != "ok":  # its files are not what the manifest certifies: show none of them
        print("(its files are not shown: the next run that needs this artifact rebuilds it)")
        return
    if manifest.get("stage") == "tokens":
        show_tokens(folder, manifest, rows)
        return
    if manifest.get("stage") in ("releases", "exports"):
        show_model_folder(folder / "model")
    if manifest.get("stage") == "models":
        show_release_of(data_dir, manifest["key"])
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


def show_model_folder(folder: Path) -> None:
    """A release's or export's files and its model card."""
    print(f"\n== {folder}")
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        print(f"{path.stat().st_size / 1e6:>10.2f} MB  {path.relative_to(folder)}")
    if (folder / "README.md").is_file():
        print(f"\n== model card ({folder / 'README.md'})\n")
        print((folder / "README.md").read_text())


def show_release_of(data_dir: str, model_key: str) -> None:
    """The model card of the newest release of a model (what ``push`` would upload); a URL store's releases."""
    store = remote.store_of(data_dir)
    if store is None:
        manifests = [read_manifest(p.parent) for p in (artifacts_root(data_dir) / "releases").glob("*/manifest.json")]
    else:
        manifests = [
            m for _, m in store_cleanup.manifests_in(store, store_cleanup.listing(store, "releases/")).values()
        ]
    releases = [m for m in manifests if m and m.get("params", {}).get("model") == model_key]
    if not releases:
        print("\n(no release of this model yet: the flow makes one, or `train-embeddings push`)")
        return
    newest = max(releases, key=lambda m: m.get("created", ""))
    card = artifacts_root(data_dir) / "releases" / newest["key"] / "model" / "README.md"
    if store is not None and (check := pulled(store, card.parent.parent)) != "ok":
        print(f"\n(the newest release of this model, releases/{newest['key']}, is damaged in the store: {check})")
        return
    print(f"\n== model card of releases/{newest['key']} ({card})\n")
    print(card.read_text())


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
    df = pd.read_parquet(folder / TOKENS_FILE).head(rows)
    print(f"\n== tokens.parquet, first {len(df)} rows (length: decoded ids)")
    for i, row in df.iterrows():
        for column, ids in row.items():
            if column.endswith("_input_ids"):
                text = tokenizer.decode(ids) if tokenizer else str(list(ids))
                print(f"{i:>4} {column:<22} {len(ids):>4}: {text[:110]}")
            else:
                print(f"{i:>4} {column:<22} {ids}")
