"""The `train-embeddings` flow: raw rows → held-out split (optional) → pairs (the loss's format) → triplets
(negatives) → tokens → model → metrics → champion → report → release (model card, exports) → the Hub.

Every stage writes an artifact under ``<data_dir>/artifacts/<stage>/<key>/`` whose key derives
from all that determines it, so a re-run with the same parameters is served from those
artifacts and a changed parameter recomputes only what lies downstream of it. The flow's flat
parameters become the stages' settings in one place, by name: the recipe's choices, the mining
config, the training recipe (keyed) and runtime (never keyed), the evaluation settings.
"""

from __future__ import annotations

import os
from dataclasses import asdict, replace

from prefect import flow, get_run_logger

from flows.checks import check_eval_source, check_settings, check_source
from flows.watchdog import guard_this_process
from tasks import stages
from tasks.cluster.connection import connected
from tasks.evaluation.evaluate import read_metrics
from tasks.evaluation.settings import DEFAULT_TASKS, EvalSettings
from tasks.models.miner import resolve_miner
from tasks.models.resolve import BUNDLED_MINILM, resolve_model
from tasks.negatives.strategies import MiningConfig
from tasks.pairs import holdout, sources
from tasks.promotion import MIN_GAIN
from tasks.recipes import Choices, apply_recipe
from tasks.shipping import exports
from tasks.store import placement
from tasks.store.leases import leased
from tasks.store.runs import ModelFacts, RunArtifacts, RunRecord, manifest_facts, write_run_record
from tasks.training.nodes import check_nodes
from tasks.training.recipe import TrainRecipe, TrainRuntime


@leased(flow(name="train-embeddings"))  # run-long lease; not log_prints: it breaks dill's stdout capture (datasets)
def train_embeddings(
    loss: str | None = None,
    negatives: str | None = None,
    nli_source: str | None = None,
    max_pairs: int | None = 50_000,
    base_model: str | None = None,
    miner_model: str = BUNDLED_MINILM,
    epochs: float | None = None,
    batch_size: int | None = None,
    learning_rate: float | None = None,
    warmup_steps: int | None = None,
    seed: int = 42,
    data_dir: str = "data",
    eval_steps: int | None = None,
    max_steps: int = -1,
    eval_limit: int | None = None,
    eval_tasks: list[str] | None = None,
    range_min: int = 0,
    range_max: int = 50,
    margin: float = 0.05,
    relative_margin: float = 0.0,
    max_score: float | None = None,
    num_negatives: int = 1,
    sampling: str = "top",
    negatives_layout: str = "rows",
    matryoshka_dims: list[int] | None = None,
    eval_dims: list[int] | None = None,
    eval_precision: str = "fp32",
    eval_holdout: float = 0.0,
    eval_source: str | None = None,
    eval_distractors: int = holdout.DISTRACTORS,
    precision: str | None = None,
    batch_sampler: str | None = None,
    mini_batch_size: int | None = None,
    checkpoint_steps: int = 500,
    processes: int = 0,
    nodes: int = 1,
    encode_cluster: str | None = None,
    unpad: bool = True,
    attention: str = "auto",
    compile: bool = False,
    recipe: str | None = None,
    promote_metric: str = "stsb_test_spearman",
    min_gain: float = MIN_GAIN,
    export_formats: list[str] | str | None = None,
    compare_exports: bool = True,
    push_to_hub: str | None = None,
    push_private: bool = True,
    hub_token_block: str = "hf-token",
    license: str | None = None,
    language: str | None = None,
) -> dict:
    """Train a sentence-embedding model on NLI pairs and compare it with its base model.

    Offline by default: the bundled MNLI sample and the bundled all-MiniLM-L6-v2. With network,
    ``recipe="seed"`` is the notebook's setting (glue/mnli, bert-base-uncased) and ``recipe="strong"``
    the best we know; a recipe sets only the parameters left unset (None), so a value passed always wins.
    Unset: loss mnr (gist: GISTEmbedLoss guided by ``miner_model``), the bundled MNLI sample, MiniLM,
    1 epoch, batch 32, learning rate 5e-5, 100 warmup and evaluation steps, fp16 on CUDA.
    ``matryoshka_dims`` trains inside MatryoshkaLoss and scores STS-B at each dimension (``eval_dims``
    scores other dimensions, or any model's truncations).
    ``miner_model="champion"`` mines (and guides GIST) with the current champion (the base model while none).
    ``eval_tasks``: MTEB task names (default Banking77Classification; STSBenchmark bundled); ``eval_limit``
    caps evaluation rows per split (quick runs); ``max_steps`` caps training.
    ``eval_holdout``: the fraction of the source's anchors held out of training and scored as retrieval
    (``holdout_ndcg@10``, ...) against their positives and ``eval_distractors`` training-side texts;
    ``eval_source``: a file, folder or hub dataset of pairs to score so instead.
    ``eval_precision``: fp32 by default on every device, so scores compare across machines; a GPU may
    evaluate in ``bf16`` or ``fp16`` (faster, its own metrics, compared only with models scored alike).
    The trained model becomes the champion only if it beats the current one on ``promote_metric``,
    evaluated the same way, by at least ``min_gain`` and (STS-B) with a paired bootstrap interval of the
    gain above zero. ``checkpoint_steps``, ``eval_steps``, ``processes`` (per node), ``nodes``, ``unpad``,
    ``attention``, ``compile`` and ``encode_cluster`` (a Dask scheduler ``tcp://host:8786`` or ``local:N``
    workers, to encode, search and train on) decide only how the work runs: alone, served from the store.
    ``export_formats`` (onnx, onnx-int8, openvino, openvino-int8, static; none by default) are written
    beside the model, each measured against it when ``compare_exports``; every run ends with a release
    folder: the model, its card (lineage) and those exports. ``push_to_hub`` (``org/name``) publishes that
    folder when its model is the champion and not published there yet (token: HF_TOKEN or the Prefect
    Secret ``hub_token_block``). ``license``, ``language``: the card's (default: the base model's card's).
    """
    guard_this_process()  # killed however, this process leaves no Prefect server (or torchrun worker) behind
    # The parameters, by name: what a recipe may set (None: not passed), then each stage's settings
    chosen = apply_recipe(
        recipe,
        Choices(
            loss=loss,
            negatives=negatives,
            nli_source=nli_source,
            base_model=base_model,
            epochs=epochs,
            batch_size=batch_size,
            learning_rate=learning_rate,
            warmup_steps=warmup_steps,
            eval_steps=eval_steps,
            precision=precision,
            batch_sampler=batch_sampler,
            mini_batch_size=mini_batch_size,
        ),
    )
    mining = MiningConfig(
        strategy=chosen.negatives,
        num_negatives=num_negatives,
        range_min=range_min,
        range_max=range_max,
        max_score=max_score,
        margin=margin,
        relative_margin=relative_margin,
        sampling=sampling,
        layout=negatives_layout,
        seed=seed,
    )
    train_recipe = TrainRecipe(
        loss=chosen.loss,
        epochs=chosen.epochs,
        batch_size=chosen.batch_size,
        learning_rate=chosen.learning_rate,
        warmup_steps=chosen.warmup_steps,
        max_steps=max_steps,
        seed=seed,
        precision=chosen.precision,
        batch_sampler=chosen.batch_sampler,
        mini_batch_size=chosen.mini_batch_size,
        matryoshka_dims=tuple(matryoshka_dims or ()),
    )
    runtime = TrainRuntime(
        eval_steps=chosen.eval_steps,
        checkpoint_steps=checkpoint_steps,
        processes=processes,
        nodes=nodes,
        unpad=unpad,
        attention=attention,
        compile=compile,
    )
    settings = EvalSettings(
        tasks=tuple(DEFAULT_TASKS if eval_tasks is None else eval_tasks),
        limit=eval_limit,
        dims=train_recipe.matryoshka_dims if eval_dims is None else tuple(eval_dims),
        precision=eval_precision,
    )
    formats = exports.check_formats(export_formats or [])
    holdout.check_holdout(eval_holdout, eval_source, eval_distractors)
    held_out = holdout.holding_out(eval_holdout, eval_source)
    check_settings(chosen, max_pairs, mining, train_recipe, runtime, settings, promote_metric, min_gain, push_to_hub,
                   hub_token_block, held_out)  # fmt: skip
    os.environ.setdefault("WANDB_DISABLED", "true")
    data_dir = placement.settle(data_dir)  # a URL store reachable, no temporary folder, a sound champion record
    with connected(encode_cluster, data_dir) as cluster:  # checked now: encoding, search, training nodes go to it
        check_nodes(runtime, cluster)
        # 1. The rows, checked before any model loads; a hub source pinned to a commit (which keys the rows)
        source = sources.pin_source(chosen.nli_source)
        check_source(source, chosen.loss, mining.strategy)
        scored = None if eval_source is None else sources.pin_source(eval_source)
        if scored is not None:
            check_eval_source(scored)
        raw = stages.load_pairs(source, max_pairs, data_dir)
        # 2. The held-out split: anchors kept out of training (its rows stand in for raw's), to judge models on
        split = None
        if held_out:
            scored_rows = None if scored is None else stages.load_pairs(scored, None, data_dir)
            split = stages.hold_out(raw, eval_holdout, scored_rows, eval_distractors, data_dir)
            settings = replace(settings, holdout=split.key)
        rows = split or raw
        # 3. Map labels to the loss's format
        pairs = stages.map_labels(rows, chosen.loss, data_dir)
        # 4. Negatives for MNR and GIST, never a held-out text
        needs_miner = mining.strategy == "semi-hard" or chosen.loss == "gist"
        miner = resolve_miner(miner_model, chosen.base_model, data_dir) if needs_miner else None
        triplets = stages.mine_negatives(pairs, rows, mining, miner, data_dir) if mining.strategy != "none" else None
        # 5. Token ids, once per data and tokenizer
        base = resolve_model(chosen.base_model)
        ids = stages.tokenize(triplets or pairs, base, chosen.loss, data_dir)
        # 6. Train (GIST: the miner model guides the in-batch negatives)
        guide = miner if chosen.loss == "gist" else None
        model = stages.train(ids, base, train_recipe, runtime, data_dir, guide=guide)
        # 7. Evaluate the base and the trained model
        base_metrics = stages.evaluate(base, [], settings, data_dir)
        trained_metrics = stages.evaluate(stages.trained_model(model), [model], settings, data_dir)
        # 8. Promote to champion only if it beats the current one, evaluated the same way
        promotion = stages.promote(model, trained_metrics, settings, promote_metric, min_gain, data_dir)
    base_scores, trained_scores = read_metrics(base_metrics.folder), read_metrics(trained_metrics.folder)
    made = RunArtifacts(raw=raw, holdout=split, pairs=pairs, triplets=triplets, tokens=ids, model=model,
                        base_metrics=base_metrics, trained_metrics=trained_metrics)  # fmt: skip
    record = RunRecord(
        parameters=asdict(chosen)
        | {"recipe": recipe, "max_pairs": max_pairs, "miner_model": miner_model}
        | {"license": license, "language": language}
        | {"eval_holdout": eval_holdout, "eval_source": eval_source, "eval_distractors": eval_distractors},
        source=source,
        mining=asdict(mining),
        train_recipe=asdict(train_recipe),
        runtime=asdict(runtime),
        base_model=ModelFacts.of(base),
        miner_model=None if miner is None else ModelFacts.of(miner),
        artifacts=made,
        metrics={m: {"base": base_scores[m], "trained": trained_scores[m]} for m in base_scores},
        evaluation=settings.record() | stages.held_out_sizes(split),
        champion=promotion.decision,
        **manifest_facts(raw, model),
    )
    # 9. Report
    report = stages.report(record, promotion.champion, settings.dims, data_dir)
    record = replace(record, artifacts=replace(record.artifacts, report=report))
    # 10. The release: the exports (each measured against the model), the card (lineage), one folder
    compared_on = replace(settings, holdout=None) if compare_exports else None  # exports: STS-B and MTEB only
    shipment = stages.release_model(record, promotion.champion, formats, compared_on, data_dir)
    record = replace(record, artifacts=replace(record.artifacts, exports=shipment.exports,
                                               comparison=shipment.comparison, release=shipment.release))  # fmt: skip
    # 11. Published when a new champion
    if push_to_hub:
        pushed = stages.push(shipment, model, promotion.champion, push_to_hub, push_private, hub_token_block, data_dir)
        record = replace(record, pushed=pushed)
    record = write_run_record(data_dir, record)
    for metric, pair in record.metrics.items():
        get_run_logger().info("%s: %.4f → %.4f", metric, pair["base"], pair["trained"])
    return record.as_dict()


if __name__ == "__main__":
    train_embeddings()
