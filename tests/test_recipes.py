"""Recipes resolve to the expected settings; explicit values win; impossible settings are refused."""

from __future__ import annotations

import pytest

from flows.train_embeddings import FLOW_DEFAULTS
from tasks.recipes import RECIPES, apply_recipe
from tasks.training import TrainConfig, mixed_precision


def test_seed_recipe_is_the_notebook():
    resolved = apply_recipe("seed", dict(FLOW_DEFAULTS, loss="cosine"), FLOW_DEFAULTS)
    assert resolved["nli_source"] == "glue/mnli" and resolved["max_pairs"] == 50_000
    assert resolved["base_model"] == "bert-base-uncased"
    assert (resolved["batch_size"], resolved["epochs"], resolved["warmup_steps"], resolved["eval_steps"]) == (
        32,
        1.0,
        100,
        100,
    )
    assert resolved["precision"] == "fp16" and resolved["loss"] == "cosine"


def test_strong_recipe_and_overrides():
    given = dict(FLOW_DEFAULTS, learning_rate=1e-5)
    resolved = apply_recipe("strong", given, FLOW_DEFAULTS)
    assert resolved["loss"] == "mnr" and resolved["negatives"] == "semi-hard"
    assert resolved["batch_sampler"] == "no_duplicates" and resolved["mini_batch_size"] == -1  # cached only if needed
    assert resolved["precision"] == "bf16" and resolved["batch_size"] == 256
    assert resolved["learning_rate"] == 1e-5  # passed explicitly: the recipe does not override it
    assert resolved["nli_source"] == FLOW_DEFAULTS["nli_source"]  # not part of the recipe


def test_no_recipe_changes_nothing_and_unknown_is_refused():
    assert apply_recipe(None, FLOW_DEFAULTS, FLOW_DEFAULTS) == FLOW_DEFAULTS
    with pytest.raises(ValueError, match="parameter recipe"):
        apply_recipe("fast", FLOW_DEFAULTS, FLOW_DEFAULTS)
    assert set(RECIPES) == {"seed", "strong"}


def test_every_recipe_key_is_a_flow_parameter():
    for settings in RECIPES.values():
        assert set(settings) <= set(FLOW_DEFAULTS)


@pytest.mark.parametrize(
    "config, message",
    [
        (TrainConfig(precision="fp8"), "parameter precision"),
        (TrainConfig(batch_sampler="round_robin"), "parameter batch_sampler"),
        (TrainConfig(loss="cosine", mini_batch_size=8), "mini_batch_size"),
        (TrainConfig(mini_batch_size=-2), "mini_batch_size"),
        (TrainConfig(attention="flash"), "parameter attention"),
    ],
)
def test_impossible_training_settings_are_refused(config, message):
    with pytest.raises(ValueError, match=message):
        config.check()


def test_cpu_trains_in_full_precision_whatever_is_asked():
    assert mixed_precision("bf16") == "no" and mixed_precision("fp16") == "no"
