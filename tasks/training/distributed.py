"""Data-parallel training: with several GPUs the training stage launches torchrun from the task.

Each process runs the same ``train_model`` on its share of every global batch (the Trainer reads the
torchrun environment, the in-batch losses gather embeddings across processes); process zero saves
the model and its summary, which the task collects. One GPU, or the CPU, trains in process; several
machines each run a torchrun agent of one launch (``nodes.py``).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from dataclasses import asdict, replace
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq

from tasks.pairs.labels import RANKING
from tasks.training.recipe import TrainRecipe, TrainRuntime
from tasks.training.tokens import TokenizedData, TokenizerSpec
from tasks.training.trainer import train_model


def processes_for(runtime: TrainRuntime) -> int:
    """How many training processes: as configured, else one per GPU."""
    if runtime.processes > 0:
        return runtime.processes
    import torch

    return torch.cuda.device_count() if torch.cuda.device_count() > 1 else 1


def shared_mini_batch(model_location: str, train, recipe: TrainRecipe, per_device: int) -> int:
    """The cached loss's mini batch, chosen once for every process: each choosing from its own GPU's free
    memory could pick the cached loss on one rank and the plain one on another, whose gathers and gradient
    reductions would then no longer line up. "auto" sizes against the GPU with the least free memory."""
    if recipe.mini_batch_size >= 0 or recipe.loss not in RANKING:
        return recipe.mini_batch_size
    import torch
    from sentence_transformers import SentenceTransformer

    from tasks.training import tokens
    from tasks.training.memory import mini_batch_for

    if not torch.cuda.is_available():
        return 0
    model = SentenceTransformer(model_location, device="cpu", trust_remote_code=False)
    if not isinstance(train, TokenizedData):
        train = TokenizedData(tokens.tokenize_frame(train, recipe.loss, model), tokens.tokenizer_spec(model))
    free = min(torch.cuda.mem_get_info(i)[0] for i in range(torch.cuda.device_count()))
    lengths = list(tokens.ids_lengths(train.table).values())
    return mini_batch_for(recipe.mini_batch_size, True, model, lengths, per_device, free)


def training_processes(runtime: TrainRuntime) -> int:
    """Every training process of a run: nodes × processes per node (the global batch is split over them)."""
    return runtime.nodes * processes_for(runtime)


def train_distributed(
    model_location: str,
    train: pd.DataFrame | TokenizedData,
    sts_validation: pd.DataFrame,
    recipe: TrainRecipe,
    runtime: TrainRuntime,
    out_dir: Path,
    guide_location: str | None = None,
) -> dict:
    """Run ``train_model`` under torchrun with ``processes_for(runtime)`` processes; return its summary."""
    per_device = recipe.per_device_batch(processes_for(runtime))  # an uneven split fails here, not in every process
    recipe = replace(recipe, mini_batch_size=shared_mini_batch(model_location, train, recipe, per_device))
    spec_path = write_spec(model_location, train, sts_validation, recipe, runtime, out_dir, guide_location)
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        f"--nproc_per_node={processes_for(runtime)}",
        "-m",
        "tasks.training.distributed",
        str(spec_path),
    ]
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"distributed training failed ({done.returncode}):\n{done.stderr[-4000:]}")
    summary = json.loads((out_dir / "training.json").read_text())
    shutil.rmtree(spec_path.parent)
    return summary


def write_spec(
    model_location: str,
    train: pd.DataFrame | TokenizedData,
    sts_validation: pd.DataFrame,
    recipe: TrainRecipe,
    runtime: TrainRuntime,
    out_dir: Path,
    guide_location: str | None,
) -> Path:
    """The launch's inputs in ``out_dir/_ddp``, which every torchrun process reads: the training data, the
    STS-B pairs and spec.json (absolute paths: a process on another node has its own working directory)."""
    spec_dir = out_dir.resolve() / "_ddp"
    spec_dir.mkdir(parents=True, exist_ok=True)
    tokenizer = None
    if isinstance(train, TokenizedData):
        pq.write_table(train.table, spec_dir / "train.parquet")
        tokenizer = train.spec.as_dict()
    else:
        train.to_parquet(spec_dir / "train.parquet")
    sts_validation.to_parquet(spec_dir / "sts.parquet")
    spec = {
        "model": model_location,
        "recipe": asdict(recipe),
        "runtime": asdict(runtime),
        "out": str(out_dir.resolve()),
        "dir": str(spec_dir),
        "tokenizer": tokenizer,
        "guide": guide_location,
    }
    (spec_dir / "spec.json").write_text(json.dumps(spec))
    return spec_dir / "spec.json"


def spec_recipe(spec: dict) -> TrainRecipe:
    """The recipe as spec.json holds it (JSON has lists where the recipe has tuples)."""
    return TrainRecipe(**spec["recipe"] | {"matryoshka_dims": tuple(spec["recipe"]["matryoshka_dims"])})


def read_training_data(folder: Path, tokenizer: dict | None) -> pd.DataFrame | TokenizedData:
    """The training data a torchrun process trains on: the token ids as an Arrow table with the spec they
    were made with (never through pandas: every process would convert the whole table only to drop it),
    or the texts as a DataFrame when the launch had no ids."""
    path = folder / "train.parquet"
    if not tokenizer:
        return pd.read_parquet(path)
    spec = TokenizerSpec(tokenizer["fingerprint"], tokenizer["max_seq_length"], tuple(tokenizer["features"]))
    return TokenizedData(pq.read_table(path), spec, str(path))


def main(spec_path: str) -> None:
    """Entry point of each torchrun process."""
    spec = json.loads(Path(spec_path).read_text())
    folder = Path(spec["dir"])
    train_model(
        spec["model"],
        read_training_data(folder, spec["tokenizer"]),
        pd.read_parquet(folder / "sts.parquet"),
        spec_recipe(spec),
        TrainRuntime(**spec["runtime"]),
        Path(spec["out"]),
        guide_location=spec["guide"],
    )


if __name__ == "__main__":
    main(sys.argv[1])
