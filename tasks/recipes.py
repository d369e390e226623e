"""Named recipes: one parameter that sets many, every setting still overridable.

``seed`` is the notebook exactly (first 50,000 glue/mnli train rows, bert-base-uncased, batch 32,
1 epoch, warmup 100, fp16 on CUDA, evaluation every 100 steps); the loss stays the user's choice.
``strong`` is MNR with semi-hard negatives at batch 256, a batch sampler that keeps duplicate
texts out of a batch (they would be false in-batch negatives), bf16 where the GPU supports it, and
a lower learning rate with a warmup ratio. It uses the plain MNR loss whenever the batch fits in
GPU memory: CachedMultipleNegativesRankingLoss was measured 4.8x slower on an H100 where memory
was ample, so it is used only when asked (``mini_batch_size`` > 0) or when a batch would not fit.

A recipe sets only the parameters the caller left unset (None in the flow's signature, ``Choices``
here): any value passed wins, even one equal to the default. Parameters neither passed nor set by
the recipe take their usual defaults (``UNSET``).
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any

from tasks.models.resolve import BUNDLED_MINILM
from tasks.pairs.sources import DEFAULT_NLI_SAMPLE
from tasks.store.environment import REPO_ROOT

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


@dataclass(frozen=True)
class Choices:
    """The flow parameters a recipe may set, as passed: None means "not passed"."""

    loss: str | None = None
    negatives: str | None = None
    nli_source: str | None = None
    base_model: str | None = None
    epochs: float | None = None
    batch_size: int | None = None
    learning_rate: float | None = None
    warmup_steps: int | None = None
    eval_steps: int | None = None
    precision: str | None = None
    batch_sampler: str | None = None
    mini_batch_size: int | None = None


# What each is when neither the caller nor a recipe sets it: the seed's training settings on the bundled
# data and model. negatives stays None here: it then follows the loss (apply_recipe).
UNSET = Choices(
    **RECIPES["seed"]
    | {"loss": "mnr", "nli_source": str(DEFAULT_NLI_SAMPLE.relative_to(REPO_ROOT)), "base_model": BUNDLED_MINILM}
)


def apply_recipe(recipe: str | None, given: Choices) -> Choices:
    """The choices to run with: those passed, then the recipe's, then ``UNSET``'s; an unset ``negatives``
    means soft negatives for MNR (the seed's) and none for the other losses."""
    if recipe is not None and recipe not in RECIPES:
        raise ValueError(f"parameter recipe: {recipe!r} is not one of {sorted(RECIPES)}")
    settings = RECIPES.get(recipe, {}) if recipe else {}
    resolved = {}
    for name in (f.name for f in fields(Choices)):
        passed = getattr(given, name)
        resolved[name] = passed if passed is not None else settings.get(name, getattr(UNSET, name))
    resolved["negatives"] = resolved["negatives"] or ("soft" if resolved["loss"] == "mnr" else "none")
    return Choices(**resolved)
