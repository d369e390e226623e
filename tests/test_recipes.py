"""Recipes resolve to the expected settings; explicit values win; impossible settings are refused."""

from __future__ import annotations

import pytest

from flows.train_embeddings import BUNDLED_MINILM, FLOW_DEFAULTS, UNSET_DEFAULTS, resolve_parameters
from tasks.recipes import RECIPES, apply_recipe
from tasks.training import TrainConfig, mixed_precision


def test_seed_recipe_is_the_notebook():
    resolved = apply_recipe("seed", dict(FLOW_DEFAULTS, loss="cosine"), UNSET_DEFAULTS)
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
    resolved = apply_recipe("strong", given, UNSET_DEFAULTS)
    assert resolved["loss"] == "mnr" and resolved["negatives"] == "semi-hard"
    assert resolved["batch_sampler"] == "no_duplicates" and resolved["mini_batch_size"] == -1  # cached only if needed
    assert resolved["precision"] == "bf16" and resolved["batch_size"] == 256
    assert resolved["learning_rate"] == 1e-5  # passed explicitly: the recipe does not override it
    assert resolved["nli_source"] == UNSET_DEFAULTS["nli_source"]  # not part of the recipe


def test_no_recipe_changes_nothing_and_unknown_is_refused():
    assert apply_recipe(None, FLOW_DEFAULTS, UNSET_DEFAULTS) == FLOW_DEFAULTS | UNSET_DEFAULTS
    with pytest.raises(ValueError, match="parameter recipe"):
        apply_recipe("fast", FLOW_DEFAULTS, UNSET_DEFAULTS)
    assert set(RECIPES) == {"seed", "strong"}


def test_every_recipe_key_is_a_flow_parameter_that_can_be_left_unset():
    for settings in RECIPES.values():
        assert set(settings) <= set(UNSET_DEFAULTS) <= set(FLOW_DEFAULTS)
    assert all(FLOW_DEFAULTS[name] is None for name in UNSET_DEFAULTS)  # None in the signature: "not passed"


@pytest.mark.parametrize("recipe", sorted(RECIPES))
def test_a_value_passed_wins_even_when_it_equals_the_default(recipe):
    explicit = {name: value for name, value in UNSET_DEFAULTS.items() if value is not None}
    explicit["negatives"] = "soft"  # what an unset negatives means with loss mnr
    resolved = resolve_parameters(FLOW_DEFAULTS | explicit | {"recipe": recipe})
    assert {name: resolved[name] for name in explicit} == explicit


def test_seed_recipe_keeps_a_passed_base_model_and_local_source():
    """The reported case: the seed recipe used to swap the bundled MiniLM for bert-base-uncased."""
    given = FLOW_DEFAULTS | {"recipe": "seed", "loss": "softmax", "base_model": BUNDLED_MINILM}
    given["nli_source"] = UNSET_DEFAULTS["nli_source"]
    resolved = resolve_parameters(given)
    assert resolved["base_model"] == BUNDLED_MINILM and resolved["nli_source"] == UNSET_DEFAULTS["nli_source"]
    assert resolved["loss"] == "softmax" and resolved["negatives"] == "none"
    assert resolved["learning_rate"] == 5e-5 and resolved["eval_steps"] == 100  # the recipe's, left unset
    unset = resolve_parameters(FLOW_DEFAULTS | {"recipe": "seed"})
    assert unset["base_model"] == "bert-base-uncased" and unset["nli_source"] == "glue/mnli"


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


def test_tasks_never_import_flows():
    """tasks/ is the lower layer: plain functions and thin Prefect tasks; flows/ (and the CLI) sit on top."""
    import ast
    from pathlib import Path

    offenders = []
    for path in Path(__file__).resolve().parent.parent.joinpath("tasks").glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else []
            if isinstance(node, ast.ImportFrom):
                names = [node.module or ""]
            offenders += [f"{path.name}: {n}" for n in names if n == "flows" or n.startswith("flows.")]
    assert offenders == []
