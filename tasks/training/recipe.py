"""What is trained, apart from how it runs.

``TrainRecipe`` holds every setting that changes the trained weights: the loss, epochs, the global
batch, learning rate, warmup, seed, precision, sampler, the cached loss's mini batch and the
Matryoshka dimensions. It is the model artifact's key. ``TrainRuntime`` holds what only decides how
the work runs: checkpoint cadence, nodes and processes, loader workers, unpadding and the attention kernel
(the same model up to rounding), ``torch.compile``, trackers and the evaluation cadence during
training. It never enters a key, so a changed cadence or another GPU count is served from the store.
(Hugging Face's ``TrainingArguments`` mixes the two; the trainer builds it from both.)
"""

from __future__ import annotations

from dataclasses import dataclass

from tasks.models.precision import Precision
from tasks.models.resolve import check_dims
from tasks.pairs.labels import RANKING
from tasks.training.attention import ATTENTION


@dataclass(frozen=True)
class TrainRecipe:
    """The seed's settings by default: batch 32, 1 epoch, warmup 100."""

    loss: str = "mnr"
    epochs: float = 1.0
    batch_size: int = 32  # the global batch: each of N processes (on every node) takes batch_size / N
    learning_rate: float = 5e-5
    warmup_steps: int = 100  # -1: a warmup ratio of 0.1
    max_steps: int = -1
    seed: int = 42
    precision: str = "fp16"  # as asked: "fp16", "bf16" or "fp32"; what runs is runs_as(it) (the CPU: fp32)
    batch_sampler: str = "batch_sampler"  # or "no_duplicates": no text twice in a batch (MNR)
    # > 0 with mnr or gist: the cached (GradCache) loss with this mini batch; 0: plain;
    # -1: plain when the batch fits in GPU memory, else the cached loss with mini batches of 32
    mini_batch_size: int = 0
    matryoshka_dims: tuple[int, ...] = ()  # the loss inside MatryoshkaLoss at these dimensions; (): not wrapped

    def check(self) -> None:
        """Fail before any data is read, naming the parameter."""
        Precision.parse(self.precision, "precision")
        if self.batch_sampler not in ("batch_sampler", "no_duplicates"):
            raise ValueError(
                f"parameter batch_sampler: {self.batch_sampler!r} is not 'batch_sampler' or 'no_duplicates'"
            )
        if self.batch_size < 1:
            raise ValueError(f"parameter batch_size: must be positive, got {self.batch_size}")
        if self.mini_batch_size > 0 and self.loss not in RANKING:
            raise ValueError("parameter mini_batch_size: the cached losses apply to loss 'mnr' or 'gist' only")
        if self.mini_batch_size < -1:
            raise ValueError(f"parameter mini_batch_size: -1 (auto), 0 (plain) or a size, got {self.mini_batch_size}")
        self.check_matryoshka(None)

    def check_matryoshka(self, model_dimension: int | None) -> None:
        """Matryoshka dimensions within the model's (when known), and never with SoftmaxLoss, whose classifier
        reads the full embedding."""
        if self.matryoshka_dims and self.loss == "softmax":
            raise ValueError("parameter matryoshka_dims: SoftmaxLoss's classifier needs the full dimension")
        check_dims(self.matryoshka_dims, model_dimension, "matryoshka_dims")

    def per_device_batch(self, processes: int, nodes: int = 1) -> int:
        """Each process's share of the global batch, ``processes`` being all of them (on every node: ``nodes``
        only words the message); refused when it does not divide evenly."""
        if self.batch_size % processes:
            across = f" ({nodes} nodes × {processes // nodes})" if nodes > 1 else ""
            raise ValueError(
                f"parameter batch_size: {self.batch_size} is the global batch and does not divide evenly "
                f"over {processes} training processes{across}"
            )
        return self.batch_size // processes


@dataclass(frozen=True)
class TrainRuntime:
    """How a recipe runs here; none of it changes the trained weights beyond rounding."""

    eval_steps: int = 100  # STS-B validation every N steps during training (0: off)
    checkpoint_steps: int = 500  # a checkpoint every N steps, to resume an interrupted run (0: none)
    processes: int = 0  # data-parallel training processes per node; 0: one per GPU when there are several, else 1
    nodes: int = 1  # machines training together (torchrun on encode_cluster's GPU workers); 1: this machine
    dataloader_workers: int = -1  # -1: 2 on CUDA (with pinned memory), 0 on CPU
    unpad: bool = True  # compute on real tokens: flash attention's unpadding, else length-grouped chunks
    attention: str = "auto"  # "auto": flash attention where installed on CUDA, else SDPA; or a transformers name
    compile: bool = False  # torch.compile the model (measured in bench/training_throughput.py)
    report_to: str = "none"  # experiment trackers, as transformers names them
    chunk_cost: int = -1  # length-grouped chunks: a forward pass's cost in tokens; -1: measured on CUDA, 64 on CPU

    def check(self) -> None:
        if self.attention not in ATTENTION:
            raise ValueError(f"parameter attention: {self.attention!r} is not one of {ATTENTION}")
        if self.processes < 0:
            raise ValueError(f"parameter processes: 0 (one per GPU) or a count, got {self.processes}")
        if self.nodes < 1:
            raise ValueError(f"parameter nodes: 1 (this machine) or more training nodes, got {self.nodes}")
        if self.nodes > 1 and self.processes == 0:  # 0 would count this machine's GPUs, not a node's
            raise ValueError(f"parameter processes: with nodes={self.nodes}, give the processes per node (its GPUs)")


def recipe_and_runtime(**settings) -> tuple[TrainRecipe, TrainRuntime]:
    """Flat settings (as benchmarks and tests write them) split into the recipe and the runtime; a name that
    is neither is refused."""
    recipe_fields, runtime_fields = set(TrainRecipe.__dataclass_fields__), set(TrainRuntime.__dataclass_fields__)
    unknown = set(settings) - recipe_fields - runtime_fields
    if unknown:
        raise TypeError(f"unknown training settings {sorted(unknown)}")
    recipe = TrainRecipe(**{k: v for k, v in settings.items() if k in recipe_fields})
    return recipe, TrainRuntime(**{k: v for k, v in settings.items() if k in runtime_fields})
