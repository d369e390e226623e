"""How models are evaluated: the settings that decide a score, and the names of the metrics they give.

``EvalSettings`` is everything that decides a score: tasks, row limit, dimensions and the data's
fingerprints. The champion keeps its record, so that models evaluated differently are never compared.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass

from tasks.evaluation import mteb_tasks
from tasks.evaluation.data import BUNDLED_FILES
from tasks.models.precision import Precision, runs_as

STSB_SPLITS = ("validation", "test")
DEFAULT_TASKS = ("Banking77Classification",)


def dimension_metric(metric: str, dim: int) -> str:
    return f"{metric}_dim{dim}"


@dataclass(frozen=True)
class EvalSettings:
    """How models are evaluated. ``limit`` caps rows per split of the bundled data (quick runs)."""

    tasks: tuple[str, ...] = DEFAULT_TASKS
    limit: int | None = None
    dims: tuple[int, ...] = ()  # STS-B also at these truncated dimensions (Matryoshka)
    precision: str = "fp32"  # what a GPU encodes in ("bf16", "fp16": faster, not the anchors'); the CPU: fp32
    holdout: str | None = None  # the held-out split's key (``holdout/<key>``): retrieval on the user's data

    @property
    def effective_precision(self) -> Precision:
        """What this machine encodes in under these settings (``runs_as``: the CPU always fp32); records and
        keys hold its name ("fp32", "bf16", "fp16")."""
        return runs_as(self.precision)

    def metric_names(self) -> list[str]:
        names = [f"stsb_{split}_spearman" for split in STSB_SPLITS]
        names += [dimension_metric(m, d) for m in names[:2] for d in self.dims]
        names += [mteb_tasks.metric_name(t) for t in self.tasks]
        if self.holdout is not None:
            from tasks.evaluation.retrieval import metric_names  # it imports this module

            names += metric_names(self.dims)
        return names

    @functools.cached_property
    def fingerprints(self) -> dict[str, str]:
        """The evaluation data's identity: hashes of bundled files, pinned hub revisions of the others
        (hashed once per settings, though a run records them in several places)."""
        return {name: mteb_tasks.data_fingerprint(name, BUNDLED_FILES) for name in ("stsb", *self.tasks)}

    def record(self) -> dict:
        """What the champion keeps: the settings and the data's fingerprints (and the held-out split's key, when
        there is one: records from before it compare equal to runs without one)."""
        record = {
            "tasks": list(self.tasks),
            "limit": self.limit,
            "dims": list(self.dims),
            "precision": self.effective_precision.value,
            "data": self.fingerprints,
        }
        return record | ({"holdout": self.holdout} if self.holdout is not None else {})

    @classmethod
    def from_record(cls, record: dict) -> EvalSettings:
        """The settings a record was evaluated with (records from before precision was kept: fp32, the CPU's)."""
        dims, precision = tuple(record.get("dims", ())), record.get("precision", "fp32")
        return cls(tuple(record["tasks"]), record["limit"], dims, precision, record.get("holdout"))

    def check(self, hub_reachable: Callable[[], bool]) -> None:
        if self.limit is not None and self.limit < 1:
            raise ValueError(f"parameter eval_limit: must be positive or None, got {self.limit}")
        Precision.parse(self.precision, "eval_precision")
        if len(set(self.tasks)) != len(self.tasks):
            raise ValueError(f"parameter eval_tasks: a task is named twice in {list(self.tasks)}")
        mteb_tasks.check_tasks(self.tasks, hub_reachable)
