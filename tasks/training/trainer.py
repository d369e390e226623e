"""Train a sentence-embedding model with SentenceTransformerTrainer around the recipe's loss.

Reads like the seed notebook: model, data, loss, evaluator, arguments, trainer, train, save.
The data are token ids (the tokens stage), so the training loop only pads, and the model computes
on real tokens (``batches``). What is trained comes from the ``TrainRecipe``, how it runs from the
``TrainRuntime`` and the machine (``hardware``). No experiment tracker unless ``report_to`` asks.
"""

from __future__ import annotations

import json
import logging
import os
import random
import shutil
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pandas as pd
from transformers import TrainerCallback, set_seed

from tasks.pairs.labels import RANKING
from tasks.training import batches, checkpoints, hardware, losses, tokens
from tasks.training.recipe import TrainRecipe, TrainRuntime
from tasks.training.sampler import NoDuplicatesIdsBatchSampler
from tasks.training.throughput import throughput

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
    """Train and save to ``out_dir/model``; returns the log history and throughput.

    ``train`` is token ids from the tokens stage (checked against the model's tokenizer), or texts,
    which are tokenised here first with the same function. ``guide_location`` is GISTEmbedLoss's guide.
    """
    import torch
    from sentence_transformers import SentenceTransformerTrainer
    from sentence_transformers.evaluation import EmbeddingSimilarityEvaluator
    from sentence_transformers.training_args import SentenceTransformerTrainingArguments

    os.environ.setdefault("WANDB_DISABLED", "true")
    cuda = torch.cuda.is_available()
    precision = hardware.mixed_precision(recipe.precision)
    world = int(os.environ.get("WORLD_SIZE", "1"))  # torchrun sets it in each process

    # Model: the base model in fp32, on this process's GPU when there is one, with flash attention where
    # installed and it trains the same model
    model, attention = hardware.load_for_training(model_location, runtime.attention, recipe.precision)

    # Data: token ids in the loss's column order; made here from texts if not given
    spec = tokens.tokenizer_spec(model)
    data = train if isinstance(train, tokens.TokenizedData) else None
    if data is None:
        data = tokens.TokenizedData(tokens.tokenize_frame(train, recipe.loss, model), spec)
    data.check_against(spec)
    dataset = batches.token_dataset(data)

    # Batches: the cached loss only when asked or when a batch would not fit; unpadded batches otherwise,
    # cut into chunks by what one more forward pass costs on this model and GPU (measured before seeding)
    per_device = recipe.per_device_batch(world)
    lengths = list(tokens.ids_lengths(data.table).values())
    mini_batch = hardware.mini_batch_for(recipe.mini_batch_size, recipe.loss in RANKING, model, lengths, per_device)
    unpad = runtime.unpad and mini_batch == 0 and recipe.loss != "gist"  # these embed each column themselves
    overhead = runtime.chunk_cost if runtime.chunk_cost >= 0 else None
    if overhead is None and unpad and cuda and not batches.can_flatten(model):
        overhead = hardware.measure_chunk_overhead(model, recipe.precision)
    collator = batches.build_collator(model, data, unpad, "cuda" if cuda else "cpu", overhead)

    # Loss (seeded first: SoftmaxLoss draws its classifier's initial weights); in-batch negatives across
    # processes
    set_seed(recipe.seed)
    guide = losses.load_guide(guide_location, model, recipe.precision) if recipe.loss == "gist" else None
    loss = losses.build_loss(model, recipe.loss, mini_batch, guide, gather=world > 1)
    train_loss = losses.GroupedForwardLoss(loss, len(data.columns)) if unpad else loss
    train_loss = losses.matryoshka(model, train_loss, recipe.matryoshka_dims)

    # Evaluator: STS-B validation, Spearman of cosine similarity against gold / 5
    evaluator = EmbeddingSimilarityEvaluator(
        sentences1=sts_validation["sentence1"].tolist(),
        sentences2=sts_validation["sentence2"].tolist(),
        scores=(sts_validation["score"] / 5.0).tolist(),
        main_similarity="cosine",
        name="sts-dev",
        write_csv=False,
    )

    # Arguments: the recipe, then the runtime (mixed precision, fused AdamW, TF32 and loader workers
    # on CUDA only; checkpoints for resuming)
    workers = runtime.dataloader_workers if runtime.dataloader_workers >= 0 else (2 if cuda else 0)
    args = SentenceTransformerTrainingArguments(
        output_dir=str(out_dir / "_trainer"),
        num_train_epochs=recipe.epochs,
        max_steps=recipe.max_steps,
        per_device_train_batch_size=per_device,
        per_device_eval_batch_size=per_device,
        learning_rate=recipe.learning_rate,
        warmup_steps=0.1 if recipe.warmup_steps < 0 else recipe.warmup_steps,  # below 1: a share of all steps
        fp16=precision == "fp16",
        bf16=precision == "bf16",
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

    # Trainer, train: resumed when an earlier, interrupted build of this artifact left a whole checkpoint
    trainer = SentenceTransformerTrainer(
        model=model,
        args=args,
        train_dataset=dataset,
        loss=train_loss,
        evaluator=evaluator,
        data_collator=collator,
        callbacks=[*(callbacks or []), EvaluationLeavesRandomnessAlone(), checkpoints.CheckpointSeal(train_loss)],
    )
    last = checkpoints.last_whole_checkpoint(Path(args.output_dir))
    checkpoints.restore_loss_head(loss, last)
    started = time.perf_counter()
    result = trainer.train(resume_from_checkpoint=str(last) if last else None)
    seconds = time.perf_counter() - started

    # Save in sentence-transformers format (one process saves under DDP); the SoftmaxLoss head is not part
    # of the model
    if not trainer.is_world_process_zero():
        return {}
    model.save(str(out_dir / "model"))
    padding = batches.padding_profile(collator, len(data), per_device, recipe.seed)
    summary = {
        "device": hardware.device_name(),
        "mixed_precision": precision,
        "attention": attention,
        "attention_dropout_applied": hardware.applies_attention_dropout(attention),
        "chunk_overhead_tokens": collator.overhead if collator.layout is batches.Layout.GROUPED else None,
        "batches": str(collator.layout),
        "loss_class": type(loss).__name__ + (" in MatryoshkaLoss" if recipe.matryoshka_dims else ""),
        "processes": world,
        "per_device_batch": per_device,
        "steps": result.global_step,
        "train_loss": result.training_loss,
        "seconds": round(seconds, 2),
        "rows": len(dataset),
        "resumed_from": last.name if last else None,
        **throughput(
            model,
            data,
            min(result.global_step * recipe.batch_size, int(len(dataset) * recipe.epochs)),
            seconds,
            padding,
        ),
        "recipe": asdict(recipe),
        "runtime": asdict(runtime),
        "log_history": trainer.state.log_history,
    }
    (out_dir / "training.json").write_text(json.dumps(summary, indent=2, default=str))
    shutil.rmtree(out_dir / "_trainer", ignore_errors=True)
    log.info("trained on %s: %s steps in %.1fs", summary["device"], summary["steps"], seconds)
    return summary
