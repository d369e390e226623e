"""What ``train-embeddings inspect`` shows: every artifact checked against its manifest, or one artifact's
manifest, schema, first rows and distributions (token ids read back as text, a release's card)."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from tasks.store.artifacts import ArtifactRef, artifacts_root, list_artifacts, read_manifest, verify
from tasks.store.catalog import TOKENS_FILE


def damage(row: dict) -> str:
    """``ok``, or the files of an artifact whose bytes no longer match its manifest's checksums."""
    damaged = verify(ArtifactRef(row["stage"], row["key"], row["path"]))
    return "ok" if not damaged else "DAMAGED: " + ", ".join(damaged)


def show_list(data_dir: str) -> int:
    """Every artifact, each checked against its manifest's checksums; 1 when any is damaged."""
    rows = list_artifacts(data_dir)
    if not rows:
        print(f"no artifacts under {artifacts_root(data_dir)}")
        return 0
    table = pd.DataFrame(rows)
    table["check"] = [damage(row) for row in rows]
    with pd.option_context("display.max_rows", None, "display.width", 200, "display.max_colwidth", 60):
        print(table.drop(columns=["path"]).to_string(index=False))
    damaged = table[table["check"] != "ok"]
    for row in damaged.itertuples():
        print(f"damaged: {row.stage}/{row.key} ({row.check.removeprefix('DAMAGED: ')}): the next run rebuilds it")
    return 1 if len(damaged) else 0


def show_one(data_dir: str, ref: str, rows: int) -> None:
    folder = artifacts_root(data_dir) / ref
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
    """The model card of the newest release of a model (what ``push`` would upload)."""
    manifests = [read_manifest(p.parent) for p in (artifacts_root(data_dir) / "releases").glob("*/manifest.json")]
    releases = [m for m in manifests if m and m.get("params", {}).get("model") == model_key]
    if not releases:
        print("\n(no release of this model yet: the flow makes one, or `train-embeddings push`)")
        return
    newest = max(releases, key=lambda m: m.get("created", ""))
    card = artifacts_root(data_dir) / "releases" / newest["key"] / "model" / "README.md"
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
