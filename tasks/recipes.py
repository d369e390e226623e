"""Named recipes: one parameter that sets many, every setting still overridable.

``seed`` is the notebook exactly (first 50,000 glue/mnli train rows, bert-base-uncased, batch 32,
1 epoch, warmup 100, fp16 on CUDA, evaluation every 100 steps); the loss stays the user's choice.
``strong`` is MNR with semi-hard negatives at batch 256, a batch sampler that keeps duplicate
texts out of a batch (they would be false in-batch negatives), bf16 where the GPU supports it, and
a lower learning rate with a warmup ratio. It uses the plain MNR loss whenever the batch fits in
GPU memory: CachedMultipleNegativesRankingLoss was measured 4.8x slower on an H100 where memory
was ample, so it is used only when asked (``mini_batch_size`` > 0) or when a batch would not fit.

A recipe sets only the parameters the caller left unset (None in the flow's signature): any value
passed wins, even one equal to the default. Parameters neither passed nor set by the recipe take
their usual defaults.
"""

from __future__ import annotations

from typing import Any

RECIPES: dict[str, dict[str, Any]] = {
    "seed": {
        "nli_source": "glue/mnli",  # the first 50,000 rows: max_pairs' default
        "base_model": "bert-base-uncased",
        "epochs": 1.0,
        "batch_size": 32,
        "learning_rate": 5e-5,
        "warmup_steps": 100,
        "eval_steps": 100,
        "precision": "fp16",
        "batch_sampler": "batch_sampler",
        "mini_batch_size": 0,
    },
    "strong": {
        "loss": "mnr",
        "negatives": "semi-hard",
        "epochs": 1.0,
        "batch_size": 256,
        "mini_batch_size": -1,  # -1: plain MNR when the batch fits, else the cached loss
        "learning_rate": 2e-5,
        "warmup_steps": -1,  # -1: a warmup ratio of 0.1 instead of a step count
        "precision": "bf16",
        "batch_sampler": "no_duplicates",
    },
}


def apply_recipe(recipe: str | None, given: dict[str, Any], defaults: dict[str, Any]) -> dict[str, Any]:
    """The parameters to run with: those passed, then the recipe's, then ``defaults`` for what is still unset.

    ``given`` holds None for a parameter the caller did not pass; ``defaults`` holds the value each
    such parameter takes when neither the caller nor the recipe sets it.
    """
    if recipe is not None and recipe not in RECIPES:
        raise ValueError(f"parameter recipe: {recipe!r} is not one of {sorted(RECIPES)}")
    settings = RECIPES.get(recipe, {}) if recipe else {}
    resolved = dict(given)
    for name, default in defaults.items():
        if resolved.get(name) is None:
            resolved[name] = settings.get(name, default)
    return resolved
