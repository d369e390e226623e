"""The data stages: the source's rows, the held-out split, the loss's format, the candidates' index, the
negatives, the token ids."""

from __future__ import annotations

import json
from dataclasses import asdict

import pandas as pd
from prefect import task
from prefect.artifacts import create_table_artifact
from prefect.cache_policies import NO_CACHE

from tasks.models import network
from tasks.models.encoding import load_model
from tasks.models.resolve import ResolvedModel
from tasks.negatives import mining, strategies
from tasks.negatives.embeddings import mining_precision
from tasks.negatives.index import IVF_CODES, StoredIndex, write_index
from tasks.pairs import holdout, labels, sources
from tasks.progress import StageProgress
from tasks.report import plots
from tasks.stages.common import logged, origin_of, read_table, unless_off
from tasks.store import catalog
from tasks.store.artifacts import (
    ArtifactRef,
    Built,
    artifact_key,
    artifacts_root,
    materialize,
    read_manifest,
    write_parquet,
)
from tasks.store.catalog import VERSIONS
from tasks.training import tokens


@task(name="load-nli-pairs", cache_policy=NO_CACHE, **network.HUB_RETRIES)  # a hub source downloads
def load_pairs(source: str, max_pairs: int | None, data_dir: str) -> ArtifactRef:
    """Validated rows from the hub (``source`` pinned to a commit by ``sources.pin_source``), a local file or
    a folder: NLI pairs (premise, hypothesis, label), or pairs / triplets (anchor, positive[, negative])."""

    def build(folder) -> Built:
        loaded = sources.load_source(source, max_pairs)
        rows = write_parquet(loaded.frame, folder / catalog.RAW_FILE)
        facts = {"origin": loaded.origin, "kind": loaded.kind, "labels": json.loads(sources.describe_nli(loaded.frame))}
        return Built(rows, facts)

    params = {"source": sources.source_fingerprint(source), "max_pairs": max_pairs}
    return logged(materialize(data_dir, "raw", VERSIONS["raw"], params, [], build))


@task(name="hold-out", cache_policy=NO_CACHE)
def hold_out(raw: ArtifactRef, fraction: float, evaluation: ArtifactRef | None, distractors: int, data_dir: str
             ) -> ArtifactRef:  # fmt: skip
    """The held-out split (``holdout``): ``fraction`` of the anchors by a hash of their text, or ``evaluation``'s
    rows (``eval_source``), kept out of training. Its ``raw.parquet`` is the training side in raw's layout, which
    every later stage reads in raw's place; its queries and corpus are what models are judged on."""
    origin = origin_of(raw)

    def build(folder) -> Built:
        rows = read_table(raw, catalog.RAW_FILE)
        if evaluation is None:
            split, where = holdout.split(rows, fraction), f"parameter eval_holdout: {fraction} of {origin}"
        else:
            split = holdout.against(rows, read_table(evaluation, catalog.RAW_FILE))
            where = f"parameter eval_source: {origin_of(evaluation)}"
        retrieval = holdout.retrieval_set(split, distractors, where)
        write_parquet(split.held, folder / catalog.HELD_OUT_FILE)
        holdout.write_retrieval(retrieval, folder)
        facts = {"origin": origin, "held_out_rows": len(split.held), "dropped_shared": split.dropped}
        return Built(write_parquet(split.train, folder / catalog.RAW_FILE), facts | {"retrieval": retrieval.sizes()})

    params = {"distractors": distractors} | ({"fraction": fraction} if evaluation is None else {})
    parents = [raw] if evaluation is None else [raw, evaluation]
    return logged(materialize(data_dir, "holdout", VERSIONS["holdout"], params, parents, build))


def held_out_sizes(split: ArtifactRef | None) -> dict:
    """What the run record (and so the report and the card) says of the held-out split: its key, fraction or
    evaluation source, and the sizes of its rows, queries and corpus; nothing without one."""
    if split is None:
        return {}
    manifest = read_manifest(split.folder) or {}
    params, parents = manifest.get("params", {}), manifest.get("parents", [])
    facts = {"key": split.key, "fraction": params.get("fraction"), "held_out_rows": manifest.get("held_out_rows"),
             "dropped_shared": manifest.get("dropped_shared"), **(manifest.get("retrieval") or {})}  # fmt: skip
    if len(parents) > 1:
        facts["eval_source"] = parents[1]["path"]
    return {"holdout_set": facts}


@task(name="map-labels", cache_policy=NO_CACHE)
def map_labels(raw: ArtifactRef, loss: str, data_dir: str) -> ArtifactRef:
    """The training format for the loss: softmax 3 labels, cosine 1/0 scores, mnr (anchor, positive)."""

    def build(folder) -> int:
        origin = origin_of(raw)  # errors name the source's file
        return write_parquet(
            labels.pairs_for_loss(read_table(raw, catalog.RAW_FILE), loss, origin), folder / catalog.PAIRS_FILE
        )

    return logged(materialize(data_dir, "pairs", VERSIONS["pairs"], {"loss": loss}, [raw], build))


def index_key(raw: ArtifactRef, nli: pd.DataFrame, config: strategies.MiningConfig, miner: ResolvedModel
              ) -> tuple[dict, str]:  # fmt: skip
    """What determines the candidates' index: the source, the miner and the precision its vectors are in, and
    for an IVF index (more candidates than ``exact_limit``) the seed of its training sample and calibration
    queries, how its lists are clustered and what codes they hold; a flat index depends on none of them. Its
    key names it before it exists (cached triplets never fetch it)."""
    params = {"miner": miner.fingerprint, "precision": mining_precision().value, "kind": "flat"}
    candidates = len(strategies.candidate_pool(nli))  # ``raw``'s rows as NLI
    if candidates > config.exact_limit:
        # plain k-means made other lists, and full vectors in them another index
        params |= {"kind": "ivf", "seed": config.seed, "clustering": "spherical", "codes": IVF_CODES.lower()}
    return params, artifact_key("indexes", VERSIONS["indexes"], params, [raw])


def candidate_index(
    raw: ArtifactRef, nli: pd.DataFrame, config: strategies.MiningConfig, miner: ResolvedModel, data_dir: str
) -> ArtifactRef:
    """The miner's FAISS index over the source's candidates (``indexes``): built once per miner, precision and
    source, and a parent of every triplets artifact mined with it, whatever its rank window or margins."""

    def build(folder) -> Built:
        progress = StageProgress(f"encoding candidates with {miner.name}").update
        built, encoded = mining.candidate_index(nli, miner, data_dir, config, progress)
        write_index(built, folder / catalog.INDEX_FILE)
        return Built(len(built.vectors), {"index": built.kind, "encoded_texts": encoded})

    facts = {"miner_model": asdict(miner)}  # by location: gc keeps a store model that mines
    params, _ = index_key(raw, nli, config, miner)
    return logged(materialize(data_dir, "indexes", VERSIONS["indexes"], params, [raw], build, facts=facts))


@task(name="mine-negatives", cache_policy=NO_CACHE)
def mine_negatives(
    pairs: ArtifactRef,
    raw: ArtifactRef,
    config: strategies.MiningConfig,
    miner: ResolvedModel | None,
    data_dir: str,
) -> ArtifactRef:
    """Triplets (or n-tuples) with negatives, a diagnostics table, a sample to eyeball, a histogram. Semi-hard
    mining searches the candidates' index (``candidate_index``), one of the triplets' parents."""
    config.check()
    params, parents = unless_off(asdict(config), relative_margin=0.0), [pairs, raw]
    nli = None  # raw's rows as NLI, read once: semi-hard keys its index by them before anything is built
    if config.strategy == "semi-hard":
        assert miner is not None
        params["miner"] = miner.fingerprint
        nli = labels.as_nli(read_table(raw, catalog.RAW_FILE))
        key = index_key(raw, nli, config, miner)[1]
        parents.append(ArtifactRef("indexes", key, str(artifacts_root(data_dir) / "indexes" / key)))

    def kept_index() -> StoredIndex:  # built (or found) only once the texts show negatives can be found
        kept = candidate_index(raw, nli, config, miner, data_dir)
        if kept.key != parents[-1].key:  # the key the triplets were keyed by before the index existed
            raise RuntimeError(f"the candidates' index is indexes/{kept.key}, planned as {parents[-1].key}")
        return StoredIndex(kept.folder / catalog.INDEX_FILE, (read_manifest(kept.folder) or {})["index"])

    def build(folder) -> Built:
        progress = StageProgress(f"encoding texts with {miner.name}").update if miner is not None else None
        rows = nli if nli is not None else labels.as_nli(read_table(raw, catalog.RAW_FILE))
        index = kept_index if config.strategy == "semi-hard" else None
        triplets, facts = mining.mine(read_table(pairs, catalog.PAIRS_FILE), rows, config, miner, data_dir, progress,
                                      index)  # fmt: skip
        if config.strategy == "semi-hard" and "negative_score" in triplets:
            plots.similarity_histogram(triplets, folder / catalog.SIMILARITIES_PLOT)
        write_parquet(triplets.sample(min(200, len(triplets)), random_state=config.seed), folder / catalog.SAMPLE_FILE)
        return Built(write_parquet(triplets, folder / catalog.TRIPLETS_FILE), facts)

    facts = None if miner is None else {"miner_model": asdict(miner)}  # by location: gc keeps a store model that mines
    ref = materialize(data_dir, "triplets", VERSIONS["triplets"], params, parents, build, facts=facts)
    diagnostics = (read_manifest(ref.folder) or {}).get("diagnostics", {})
    create_table_artifact(
        key="mining-diagnostics",
        table=[{"measure": k, "value": v} for k, v in diagnostics.items()],
        description=f"negatives: {config.strategy} ({ref.stage}/{ref.key})",
    )
    return logged(ref)


@task(name="tokenize", cache_policy=NO_CACHE)
def tokenize(data: ArtifactRef, base: ResolvedModel, loss: str, data_dir: str) -> ArtifactRef:
    """Token ids of the training data, made once with the model's own preprocessing (``training/tokens.py``).

    Keyed by its parent, the tokenizer's fingerprint and max_seq_length, so another learning rate or
    epoch count re-uses it, and another tokenizer or length never does.
    """
    model = load_model(base, device="cpu")
    spec = tokens.tokenizer_spec(model)

    def build(folder) -> Built:
        path = data.folder / (catalog.TRIPLETS_FILE if data.stage == "triplets" else catalog.PAIRS_FILE)
        progress = StageProgress(f"tokenizing with {base.name}")
        table = tokens.tokenize_file(path, loss, model, progress=progress.update)  # Arrow columns, never pandas
        tokens.lengths_histogram(table, folder / catalog.LENGTHS_PLOT)
        return Built(tokens.write_tokens(table, folder), {"columns": tokens.describe(table, spec)})

    params = {"tokenizer": spec.fingerprint, "max_seq_length": spec.max_seq_length, "loss": loss}
    facts = {"tokenizer": spec.as_dict(), "base_model": asdict(base)}
    return logged(materialize(data_dir, "tokens", VERSIONS["tokens"], params, [data], build, facts=facts))
