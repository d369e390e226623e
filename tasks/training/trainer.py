"""Train a sentence-embedding model with SentenceTransformerTrainer around the recipe's loss.

``train_model`` reads like the seed notebook, one small function a step: the model, its data, batches
and loss (``prepare``), the arguments, the trainer, training, then the saved model and its summary.
The data are token ids (the tokens stage), so the training loop only pads, and the model computes on
real tokens (``batches``). What is trained comes from the ``TrainRecipe``, how it runs from the
``TrainRuntime`` and the machine (the precision that runs here, ``attention``, ``memory``). No
experiment tracker unless ``report_to`` asks.
"""

from __future__ import annotations

import json
import logging
import os
import random
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from transformers import TrainerCallback, set_seed

from tasks.models.precision import Precision, runs_as
from tasks.pairs.labels import RANKING
from tasks.training import batches, checkpoints, losses, tokens
from tasks.training.attention import applies_attention_dropout, load_for_training
from tasks.training.devices import device_name
from tasks.training.memory import mini_batch_for
from tasks.training.recipe import TrainRecipe, TrainRuntime
from tasks.training.sampler import NoDuplicatesIdsBatchSampler
from tasks.training.throughput import measure_chunk_overhead, throughput

log = logging.getLogger(__name__)


class EvaluationLeavesRandomnessAlone(TrainerCallback):
    """Evaluating during training draws from the global random generators (each DataLoader draws a seed),
    which would move every later dropout mask: the evaluation cadence would change the trained weights.
    The generators' state before each step's evaluation is put back after it, so ``eval_steps`` stays a
    runtime setting (tested: the same weights with and without evaluation)."""

    def on_step_end(self, args, state, control, **kwargs):
        import torch

        cuda = torch.cuda.get_rng_state_all() if torch.cuda.is_initialized() else None
        self.saved = (random.getstate(), np.random.get_state(), torch.get_rng_state(), cuda)

    def on_evaluate(self, args, state, control, **kwargs):
        import torch

        if getattr(self, "saved", None) is None:  # an evaluation before the first step
            return
        python, numpy_state, cpu, cuda = self.saved
        random.setstate(python)
        np.random.set_state(numpy_state)
        torch.set_rng_state(cpu)
        if cuda is not None:
            torch.cuda.set_rng_state_all(cuda)


def train_model(
    model_location: str,
    train: pd.DataFrame | tokens.TokenizedData,
    sts_validation: pd.DataFrame,
    recipe: TrainRecipe,
    runtime: TrainRuntime,
    out_dir: Path,
    callbacks: list | None = None,
    guide_location: str | None = None,
) -> dict:
    """Train and save to ``out_dir/model``; returns the summary (log history, throughput), also written
    as ``out_dir/training.json``, or {} on a process other than zero under torchrun.

    ``train`` is token ids from the tokens stage (checked against the model's tokenizer), or texts,
    which are tokenised here first with the same function. ``guide_location`` is GISTEmbedLoss's guide.
    """
    os.environ.setdefault("WANDB_DISABLED", "true")
    run = prepare(model_location, train, recipe, runtime, guide_location)
    args = training_arguments(recipe, runtime, run.precision, run.per_device, out_dir)
    trainer = build_trainer(run, args, sts_validation, callbacks)
    finished = run_training(trainer, run.loss)
    if not trainer.is_world_process_zero():  # one process saves under DDP
        return {}
    run.model.save(str(out_dir / "model"))  # the SoftmaxLoss head is not part of the model
    summary = training_summary(run, recipe, runtime, trainer, finished)
    (out_dir / "training.json").write_text(json.dumps(summary, indent=2, default=str))
    shutil.rmtree(out_dir / "_trainer", ignore_errors=True)
    log.info("trained on %s: %s steps in %.1fs", summary["device"], summary["steps"], finished.seconds)
    return summary


@dataclass(frozen=True)
class Prepared:
    """What the trainer is built from: the model and its kernel, the precision that runs here, the ids, the
    collator, the recipe's loss and what the trainer calls (that loss in its wrappers), the batch per process."""

    model: Any
    attention: str
    precision: Precision
    data: tokens.TokenizedData
    collator: batches.TokenCollator
    loss: Any
    train_loss: Any
    per_device: int
    processes: int


def prepare(
    model_location: str,
    train: pd.DataFrame | tokens.TokenizedData,
    recipe: TrainRecipe,
    runtime: TrainRuntime,
    guide_location: str | None,
) -> Prepared:
    """Model, data, batches and loss, in this order: the chunk cost is measured before the seed is set, and
    the loss built after it (SoftmaxLoss draws its classifier's initial weights)."""
    precision = runs_as(recipe.precision)  # what runs here: fp32 on the CPU, fp16 where bf16 is not supported
    processes = int(os.environ.get("WORLD_SIZE", "1"))  # torchrun sets it in each process
    per_device = recipe.per_device_batch(processes)
    model, attention = load_for_training(model_location, runtime.attention, precision)
    data = token_ids(train, recipe.loss, model)
    mini_batch, collator = batching(model, data, recipe, runtime, precision, per_device)
    set_seed(recipe.seed)
    loss, train_loss = training_loss(model, data, recipe, mini_batch, collator, guide_location, precision, processes)
    return Prepared(model, attention, precision, data, collator, loss, train_loss, per_device, processes)


def token_ids(train: pd.DataFrame | tokens.TokenizedData, loss: str, model) -> tokens.TokenizedData:
    """The training data as token ids in the loss's column order, made here from texts if not given, and
    refused when made by another tokenizer or cut at another length than the model's."""
    spec = tokens.tokenizer_spec(model)
    data = train if isinstance(train, tokens.TokenizedData) else None
    if data is None:
        data = tokens.TokenizedData(tokens.tokenize_frame(train, loss, model), spec)
    data.check_against(spec)
    return data


def batching(
    model, data: tokens.TokenizedData, recipe: TrainRecipe, runtime: TrainRuntime, precision: Precision, per_device: int
) -> tuple[int, batches.TokenCollator]:
    """The cached loss's mini batch (0: plain) and the collator. The cached loss only when asked or when a
    batch would not fit; unpadded batches otherwise, cut into chunks by what one more forward pass costs on
    this model and GPU."""
    import torch

    cuda = torch.cuda.is_available()
    lengths = list(tokens.ids_lengths(data.table).values())
    mini_batch = mini_batch_for(recipe.mini_batch_size, recipe.loss in RANKING, model, lengths, per_device)
    unpad = runtime.unpad and mini_batch == 0 and recipe.loss != "gist"  # these embed each column themselves
    overhead = runtime.chunk_cost if runtime.chunk_cost >= 0 else None
    if overhead is None and unpad and cuda and not batches.can_flatten(model):
        overhead = measure_chunk_overhead(model, precision)
    return mini_batch, batches.build_collator(model, data, unpad, "cuda" if cuda else "cpu", overhead)


def training_loss(
    model,
    data: tokens.TokenizedData,
    recipe: TrainRecipe,
    mini_batch: int,
    collator: batches.TokenCollator,
    guide_location: str | None,
    precision: Precision,
    processes: int,
) -> tuple[Any, Any]:
    """The recipe's sentence-transformers loss, and what the trainer calls: that loss over the collator's
    chunks when batches are unpadded, inside MatryoshkaLoss when dimensions are asked for. In-batch
    negatives span every process."""
    guide = losses.load_guide(guide_location, model, precision) if recipe.loss == "gist" else None
    loss = losses.build_loss(model, recipe.loss, mini_batch, guide, gather=processes > 1)
    unpadded = collator.layout is not batches.Layout.COLUMNS
    train_loss = losses.GroupedForwardLoss(loss, len(data.columns)) if unpadded else loss
    return loss, losses.matryoshka(model, train_loss, recipe.matryoshka_dims)


def training_arguments(
    recipe: TrainRecipe, runtime: TrainRuntime, precision: Precision, per_device: int, out_dir: Path
):
    """Hugging Face's arguments from the recipe, then the runtime: mixed precision, fused AdamW, TF32 and
    loader workers on CUDA only; checkpoints for resuming."""
    import torch
    from sentence_transformers.training_args import SentenceTransformerTrainingArguments

    cuda = torch.cuda.is_available()
    workers = runtime.dataloader_workers if runtime.dataloader_workers >= 0 else (2 if cuda else 0)
    return SentenceTransformerTrainingArguments(
        output_dir=str(out_dir / "_trainer"),
        num_train_epochs=recipe.epochs,
        max_steps=recipe.max_steps,
        per_device_train_batch_size=per_device,
        per_device_eval_batch_size=per_device,
        learning_rate=recipe.learning_rate,
        warmup_steps=0.1 if recipe.warmup_steps < 0 else recipe.warmup_steps,  # below 1: a share of all steps
        **precision.trainer_flags,
        optim="adamw_torch_fused",  # transformers' default with torch >= 2.8, named here because it matters
        batch_sampler=NoDuplicatesIdsBatchSampler if recipe.batch_sampler == "no_duplicates" else "batch_sampler",
        seed=recipe.seed,
        data_seed=recipe.seed,
        tf32=True if cuda and torch.cuda.get_device_capability()[0] >= 8 else None,
        dataloader_num_workers=workers,
        dataloader_pin_memory=cuda,
        dataloader_persistent_workers=workers > 0,
        torch_compile=runtime.compile,
        eval_strategy="steps" if runtime.eval_steps > 0 else "no",
        eval_steps=runtime.eval_steps if runtime.eval_steps > 0 else None,
        logging_steps=max(1, min(runtime.eval_steps or 100, 100)),
        save_strategy="steps" if runtime.checkpoint_steps > 0 else "no",
        save_steps=runtime.checkpoint_steps or None,
        save_total_limit=1,
        report_to=runtime.report_to,
        use_cpu=not cuda,
    )


def build_trainer(run: Prepared, args, sts_validation: pd.DataFrame, callbacks: list | None):
    """The SentenceTransformerTrainer over the ids, evaluating on STS-B validation (Spearman of cosine
    similarity against gold / 5), with the callbacks that keep evaluation out of the weights and seal
    checkpoints."""
    from sentence_transformers import SentenceTransformerTrainer
    from sentence_transformers.evaluation import EmbeddingSimilarityEvaluator

    evaluator = EmbeddingSimilarityEvaluator(
        sentences1=sts_validation["sentence1"].tolist(),
        sentences2=sts_validation["sentence2"].tolist(),
        scores=(sts_validation["score"] / 5.0).tolist(),
        main_similarity="cosine",
        name="sts-dev",
        write_csv=False,
    )
    seal = checkpoints.CheckpointSeal(run.train_loss)
    return SentenceTransformerTrainer(
        model=run.model,
        args=args,
        train_dataset=batches.token_dataset(run.data),
        loss=run.train_loss,
        evaluator=evaluator,
        data_collator=run.collator,
        callbacks=[*(callbacks or []), EvaluationLeavesRandomnessAlone(), seal],
    )


@dataclass(frozen=True)
class Finished:
    """How training went: steps, the mean training loss, wall seconds, the checkpoint it resumed from."""

    steps: int
    train_loss: float
    seconds: float
    resumed_from: str | None


def run_training(trainer, loss) -> Finished:
    """Train, resumed when an earlier, interrupted build of this artifact left a whole checkpoint (with the
    loss head saved beside it put back first: the Trainer restores only the model)."""
    last = checkpoints.last_whole_checkpoint(Path(trainer.args.output_dir))
    checkpoints.restore_loss_head(loss, last)
    started = time.perf_counter()
    result = trainer.train(resume_from_checkpoint=str(last) if last else None)
    seconds = time.perf_counter() - started
    return Finished(result.global_step, result.training_loss, seconds, last.name if last else None)


def training_summary(run: Prepared, recipe: TrainRecipe, runtime: TrainRuntime, trainer, finished: Finished) -> dict:
    """What ran and how fast: device, precision, kernel, batches, loss, steps, throughput, the recipe and the
    runtime, and the log history (the models manifest and the model card read it)."""
    rows = len(run.data)
    padding = batches.padding_profile(run.collator, len(run.data), run.per_device, recipe.seed)
    samples = min(finished.steps * recipe.batch_size, int(rows * recipe.epochs))
    return {
        "device": device_name(),
        "mixed_precision": run.precision.mixed_precision,
        "attention": run.attention,
        "attention_dropout_applied": applies_attention_dropout(run.attention),
        "chunk_overhead_tokens": run.collator.overhead if run.collator.layout is batches.Layout.GROUPED else None,
        "batches": str(run.collator.layout),
        "loss_class": type(run.loss).__name__ + (" in MatryoshkaLoss" if recipe.matryoshka_dims else ""),
        "processes": run.processes,
        "per_device_batch": run.per_device,
        "steps": finished.steps,
        "train_loss": finished.train_loss,
        "seconds": round(finished.seconds, 2),
        "rows": rows,
        "resumed_from": finished.resumed_from,
        **throughput(run.model, run.data, samples, finished.seconds, padding),
        "recipe": asdict(recipe),
        "runtime": asdict(runtime),
        "log_history": trainer.state.log_history,
    }
