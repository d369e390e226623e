"""Recipes resolve to the expected settings; explicit values win; impossible settings are refused;
the house keeps its layers and its parameters traceable."""

from __future__ import annotations

import ast
import inspect
from dataclasses import asdict, fields
from pathlib import Path

import pytest

from flows.train_embeddings import train_embeddings
from tasks.models.precision import runs_as
from tasks.models.resolve import BUNDLED_MINILM
from tasks.recipes import RECIPES, UNSET, Choices, apply_recipe
from tasks.training.recipe import TrainRecipe, TrainRuntime

ROOT = Path(__file__).resolve().parent.parent
FLOW_PARAMETERS = inspect.signature(train_embeddings.fn).parameters


def test_seed_recipe_is_the_notebook():
    resolved = apply_recipe("seed", Choices(loss="cosine"))
    assert resolved.nli_source == "glue/mnli" and FLOW_PARAMETERS["max_pairs"].default == 50_000
    assert resolved.base_model == "bert-base-uncased"
    assert (resolved.batch_size, resolved.epochs, resolved.warmup_steps, resolved.eval_steps) == (32, 1.0, 100, 100)
    assert resolved.precision == "fp16" and resolved.loss == "cosine" and resolved.negatives == "none"


def test_strong_recipe_and_overrides():
    resolved = apply_recipe("strong", Choices(learning_rate=1e-5))
    assert resolved.loss == "mnr" and resolved.negatives == "semi-hard"
    assert resolved.batch_sampler == "no_duplicates" and resolved.mini_batch_size == -1  # cached only if needed
    assert resolved.precision == "bf16" and resolved.batch_size == 256
    assert resolved.learning_rate == 1e-5  # passed explicitly: the recipe does not override it
    assert resolved.nli_source == UNSET.nli_source  # not part of the recipe


def test_no_recipe_gives_the_defaults_and_unknown_is_refused():
    assert apply_recipe(None, Choices()) == Choices(**asdict(UNSET) | {"negatives": "soft"})  # mnr: soft negatives
    with pytest.raises(ValueError, match="parameter recipe"):
        apply_recipe("fast", Choices())
    assert set(RECIPES) == {"seed", "strong"}


def test_every_recipe_key_is_a_flow_parameter_that_can_be_left_unset():
    names = {f.name for f in fields(Choices)}
    for settings in RECIPES.values():
        assert set(settings) <= names
    assert all(FLOW_PARAMETERS[name].default is None for name in names)  # None in the signature: "not passed"


@pytest.mark.parametrize("recipe", sorted(RECIPES))
def test_a_value_passed_wins_even_when_it_equals_the_default(recipe):
    explicit = {name: value for name, value in asdict(UNSET).items() if value is not None} | {"negatives": "soft"}
    assert asdict(apply_recipe(recipe, Choices(**explicit))) == explicit


def test_seed_recipe_keeps_a_passed_base_model_and_local_source():
    """The reported case: the seed recipe used to swap the bundled MiniLM for bert-base-uncased."""
    given = Choices(loss="softmax", base_model=BUNDLED_MINILM, nli_source=UNSET.nli_source)
    resolved = apply_recipe("seed", given)
    assert resolved.base_model == BUNDLED_MINILM and resolved.nli_source == UNSET.nli_source
    assert resolved.loss == "softmax" and resolved.negatives == "none"
    assert resolved.learning_rate == 5e-5 and resolved.eval_steps == 100  # the recipe's, left unset
    unset = apply_recipe("seed", Choices())
    assert unset.base_model == "bert-base-uncased" and unset.nli_source == "glue/mnli"


@pytest.mark.parametrize(
    "settings, message",
    [
        (TrainRecipe(precision="fp8"), "parameter precision"),
        (TrainRecipe(batch_sampler="round_robin"), "parameter batch_sampler"),
        (TrainRecipe(loss="cosine", mini_batch_size=8), "mini_batch_size"),
        (TrainRecipe(mini_batch_size=-2), "mini_batch_size"),
        (TrainRecipe(batch_size=0), "parameter batch_size"),
        (TrainRuntime(attention="flash"), "parameter attention"),
        (TrainRuntime(processes=-1), "parameter processes"),
    ],
)
def test_impossible_training_settings_are_refused(settings, message):
    with pytest.raises(ValueError, match=message):
        settings.check()


def test_the_batch_is_global_and_must_divide_over_the_processes():
    assert TrainRecipe(batch_size=256).per_device_batch(4) == 64
    with pytest.raises(ValueError, match="parameter batch_size: 30 is the global batch"):
        TrainRecipe(batch_size=30).per_device_batch(4)


def test_cpu_trains_in_full_precision_whatever_is_asked():
    assert runs_as("bf16").mixed_precision == "no" and runs_as("fp16").mixed_precision == "no"


def test_the_recipe_holds_what_changes_the_weights_and_the_runtime_how_it_runs():
    """The issue's split, by name: a new field must be placed on purpose."""
    assert {f.name for f in fields(TrainRecipe)} == {
        "loss", "epochs", "batch_size", "learning_rate", "warmup_steps", "max_steps", "seed", "precision",
        "batch_sampler", "mini_batch_size", "matryoshka_dims",
    }  # fmt: skip
    assert {f.name for f in fields(TrainRuntime)} == {
        "eval_steps", "checkpoint_steps", "processes", "nodes", "dataloader_workers", "unpad", "attention",
        "compile", "report_to", "chunk_cost",
    }  # fmt: skip


def test_every_flow_parameter_is_used_by_name_in_the_flow():
    """No ``locals()`` hand-over: searching a parameter's name leads from the signature to its use."""
    source = (ROOT / "flows" / "train_embeddings.py").read_text()
    function = next(
        n for n in ast.walk(ast.parse(source)) if isinstance(n, ast.FunctionDef) and n.name == "train_embeddings"
    )
    used = {n.id for statement in function.body for n in ast.walk(statement) if isinstance(n, ast.Name)}
    assert set(FLOW_PARAMETERS) - used == set()
    assert "locals" not in used


# The journey's layers, lowest first: a module imports only from its own layer or those below it.
LAYERS = [
    ("store",),
    ("models",),
    ("cluster",),
    ("pairs",),
    ("negatives", "training", "evaluation"),
    ("report", "promotion"),
    ("shipping",),
    ("recipes", "progress"),
    ("stages",),
]


def _layer(module: str) -> int | None:
    parts = module.split(".")
    if parts[0] != "tasks" or len(parts) < 2:
        return None
    return next(i for i, names in enumerate(LAYERS) if parts[1] in names)


def test_imports_only_point_down_the_journey():
    offenders = []
    for path in sorted((ROOT / "tasks").rglob("*.py")):
        module = ".".join(path.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")
        own = _layer(module)
        for node in ast.walk(ast.parse(path.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else []
            if isinstance(node, ast.ImportFrom):
                names = [node.module or ""] + [f"{node.module}.{a.name}" for a in node.names]
            for name in names:
                if name == "flows" or name.startswith("flows."):
                    offenders.append(f"{module} imports {name}")
                target = _layer(name)
                same_package = name.split(".")[:2] == module.split(".")[:2]
                if own is not None and target is not None and target > own and not same_package:
                    offenders.append(f"{module} imports {name}")
                if own is not None and target == own and not same_package and len(LAYERS[own]) > 1:
                    offenders.append(f"{module} imports {name} beside it")
    assert offenders == []


MAX_MODULE_LINES = 300  # a module longer than this does more than one job: split it by job


def test_no_module_of_the_journey_is_over_300_lines():
    long = {}
    for path in sorted([*(ROOT / "tasks").rglob("*.py"), *(ROOT / "flows").rglob("*.py")]):
        lines = len(path.read_text().splitlines())
        if lines > MAX_MODULE_LINES:
            long[str(path.relative_to(ROOT))] = lines
    assert long == {}


def test_every_stage_has_a_version_in_the_catalog_and_nothing_else_names_one():
    from tasks.store.catalog import STAGES, VERSIONS

    assert set(VERSIONS) == set(STAGES)
    for path in sorted([*(ROOT / "tasks").rglob("*.py"), *(ROOT / "flows").rglob("*.py")]):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.Call) and getattr(node.func, "id", getattr(node.func, "attr", "")) == "materialize":
                stage, version = node.args[1], node.args[2]
                assert isinstance(stage, ast.Constant) and stage.value in STAGES, f"{path}: stage {ast.dump(stage)}"
                assert "VERSIONS" in ast.unparse(version), f"{path}: {stage.value} has its version outside the catalog"
