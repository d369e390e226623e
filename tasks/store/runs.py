"""The run record: what one flow run used and made, written once as ``artifacts/runs/<time>.json``.

It is the contract between the flow and everything that looks back at a run: the model card's lineage,
``gc`` (which keeps a recent run's artifacts), the CLI and the compare-losses flow. The flow returns the
same fields as a plain dict (``RunRecord.as_dict``), so users read it like the JSON file.

Artifacts are named by their stage (the folder under ``artifacts/``): ``raw``, ``pairs``, ``triplets``
(when negatives were mined), ``tokens``, ``model`` (stage ``models``), ``base-metrics`` and
``trained-metrics`` (stage ``metrics``), ``report``, ``export-<format>``, ``comparison`` and ``release``.
Records written before these names (``pairs`` for the raw rows, ``loss-format``, ``train-data``,
``exports-comparison``) are read under the new ones.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from tasks.store import transfer
from tasks.store.artifacts import ArtifactRef, artifacts_root, atomic_write_text, read_manifest

log = logging.getLogger(__name__)

RUNS = "runs"
LEGACY_NAMES = {"pairs": "raw", "loss-format": "pairs", "train-data": "triplets", "exports-comparison": "comparison"}


@dataclass(frozen=True)
class ModelFacts:
    """A model as the run named and found it."""

    name: str
    source: str  # "local", "bundled" or "hub"
    location: str | None = None

    @classmethod
    def of(cls, model: Any) -> ModelFacts:
        """From a ``ResolvedModel`` (or anything with its fields)."""
        return cls(model.name, model.source, getattr(model, "location", None))


def _entry(ref: ArtifactRef) -> dict[str, Any]:
    return {"stage": ref.stage, "key": ref.key, "path": ref.path, "rows": ref.rows, "cached": ref.cached}


def _ref(entry: dict[str, Any]) -> ArtifactRef:
    path = entry.get("path") or ""
    stage = entry.get("stage") or Path(path).parent.name
    return ArtifactRef(stage, entry.get("key") or Path(path).name, path, entry.get("rows"), bool(entry.get("cached")))


@dataclass(frozen=True)
class RunArtifacts:
    """Every artifact of a run, by stage. The flow fills each one it made; a record read back may lack some
    (written by an older version, or a partial record), and then they are None."""

    raw: ArtifactRef | None = None
    holdout: ArtifactRef | None = None  # the held-out split; its raw.parquet is what the later stages read
    pairs: ArtifactRef | None = None
    tokens: ArtifactRef | None = None
    model: ArtifactRef | None = None
    base_metrics: ArtifactRef | None = None
    trained_metrics: ArtifactRef | None = None
    triplets: ArtifactRef | None = None
    report: ArtifactRef | None = None
    exports: dict[str, ArtifactRef] = field(default_factory=dict)
    comparison: ArtifactRef | None = None
    release: ArtifactRef | None = None

    @property
    def training_data(self) -> ArtifactRef | None:
        """What the tokens were made from: the triplets when negatives were mined, else the pairs."""
        return self.triplets or self.pairs

    def named(self) -> dict[str, ArtifactRef]:
        """The artifacts in the order the journey made them, under the names of the record."""
        named = {"raw": self.raw, "holdout": self.holdout, "pairs": self.pairs, "triplets": self.triplets}
        named["tokens"] = self.tokens
        named |= {"model": self.model, "base-metrics": self.base_metrics, "trained-metrics": self.trained_metrics}
        named["report"] = self.report
        named |= {f"export-{fmt}": ref for fmt, ref in self.exports.items()}
        named |= {"comparison": self.comparison, "release": self.release}
        return {name: ref for name, ref in named.items() if ref is not None}

    @classmethod
    def from_named(cls, entries: dict[str, dict[str, Any]]) -> RunArtifacts:
        if "loss-format" in entries:  # a record from before the stage names
            entries = {LEGACY_NAMES.get(name, name): entry for name, entry in entries.items()}
            if entries.get("triplets", {}).get("key") == entries.get("pairs", {}).get("key"):
                del entries["triplets"]  # "train-data" was the pairs: no negatives were mined
        refs = {name: _ref(entry) for name, entry in entries.items() if isinstance(entry, dict)}
        exports = {name.removeprefix("export-"): ref for name, ref in refs.items() if name.startswith("export-")}
        known = {f.name for f in fields(cls)} - {"exports"}
        single = {name.replace("-", "_"): ref for name, ref in refs.items() if not name.startswith("export-")}
        unknown = sorted(set(single) - known)
        if unknown:
            raise ValueError(f"unknown artifacts {unknown}")
        return cls(**single, exports=exports)


@dataclass(frozen=True)
class RunRecord:
    """One flow run: its settings, its models, its artifacts by stage, its scores and the champion decision."""

    parameters: dict[str, Any]  # the flow's parameters as the recipe resolved them
    source: str  # the source as pinned (a hub source at its commit)
    mining: dict[str, Any]
    train_recipe: dict[str, Any]
    runtime: dict[str, Any]
    base_model: ModelFacts
    miner_model: ModelFacts | None
    artifacts: RunArtifacts
    metrics: dict[str, dict[str, float]]  # metric -> {"base": ..., "trained": ...}
    evaluation: dict[str, Any]  # how they were evaluated (EvalSettings.record())
    champion: dict[str, Any]  # the promotion decision
    training: dict[str, Any] | None = None  # what the machine really ran (the models artifact's summary)
    source_identity: dict[str, Any] | None = None  # hub commit or file checksums (the raw artifact's key)
    environment: dict[str, Any] | None = None  # the environment that trained the model
    pushed: str | None = None  # the Hub commit URL when this run published
    path: str | None = None  # where the record was written

    @property
    def model_path(self) -> str | None:
        return None if self.artifacts.model is None else str(self.artifacts.model.folder / "model")

    @property
    def release_path(self) -> str | None:
        return None if self.artifacts.release is None else str(self.artifacts.release.folder / "model")

    def as_dict(self) -> dict[str, Any]:
        """The record as users read it: the JSON file's fields (and, once written, ``run_record``: its path)."""
        facts = {
            "parameters": self.parameters,
            "source": self.source,
            "source_identity": self.source_identity,
            "mining": self.mining,
            "train_recipe": self.train_recipe,
            "runtime": self.runtime,
            "base_model": _model_dict(self.base_model),
            "miner_model": None if self.miner_model is None else _model_dict(self.miner_model),
            "model_path": self.model_path,
            "training": self.training,
            "environment": self.environment,
            "artifacts": {name: _entry(ref) for name, ref in self.artifacts.named().items()},
            "metrics": self.metrics,
            "evaluation": self.evaluation,
            "champion": self.champion,
            "release_path": self.release_path,
            "pushed": self.pushed,
        }
        return facts | ({"run_record": self.path} if self.path else {})

    @classmethod
    def from_dict(cls, facts: dict[str, Any]) -> RunRecord:
        """A record read back (also one written by an older version: missing facts are None)."""
        miner = facts.get("miner_model")
        return cls(
            parameters=facts.get("parameters") or {},
            source=facts.get("source") or "",
            mining=facts.get("mining") or {},
            train_recipe=facts.get("train_recipe") or {},
            runtime=facts.get("runtime") or {},
            base_model=ModelFacts(**_model_fields(facts.get("base_model") or {"name": "?", "source": "?"})),
            miner_model=None if not miner else ModelFacts(**_model_fields(miner)),
            artifacts=RunArtifacts.from_named(facts.get("artifacts") or {}),
            metrics=facts.get("metrics") or {},
            evaluation=facts.get("evaluation") or {},
            champion=facts.get("champion") or {},
            training=facts.get("training"),
            source_identity=facts.get("source_identity"),
            environment=facts.get("environment"),
            pushed=facts.get("pushed"),
            path=facts.get("run_record"),
        )


def _model_dict(model: ModelFacts) -> dict[str, Any]:
    return {"name": model.name, "source": model.source, "location": model.location}


def _model_fields(facts: dict[str, Any]) -> dict[str, Any]:
    return {k: facts.get(k) for k in ("name", "source", "location")}


def manifest_facts(raw: ArtifactRef, model: ArtifactRef) -> dict[str, Any]:
    """What a record keeps from two manifests, read once: the source's identity (the raw artifact's key
    parameter), and what training really ran and in which environment (the model's)."""
    model_manifest = read_manifest(model.folder) or {}
    identity = (read_manifest(raw.folder) or {}).get("params", {}).get("source")
    return {"training": model_manifest.get("training"), "environment": model_manifest.get("environment"),
            "source_identity": identity if isinstance(identity, dict) else None}  # fmt: skip


def runs_folder(data_dir: str | Path) -> Path:
    return artifacts_root(data_dir) / RUNS


def write_run_record(data_dir: str | Path, record: RunRecord) -> RunRecord:
    """One JSON per run, named by the time it finished; returns the record with its path."""
    folder = runs_folder(data_dir)
    folder.mkdir(parents=True, exist_ok=True)
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%S%fZ")
    path = folder / f"{stamp}.json"
    atomic_write_text(path, json.dumps(record.as_dict(), indent=2, default=str))
    transfer.push_files([path])  # on a URL store: every machine's gc and lineage see it
    return replace(record, path=str(path))


def read_run_record(path: Path) -> RunRecord:
    """A record from its file; raises OSError or ValueError (a damaged file) for the caller to decide."""
    facts = json.loads(path.read_text())
    if not isinstance(facts, dict):
        raise ValueError(f"{path}: not a run record (a JSON object)")
    try:
        return replace(RunRecord.from_dict(facts), path=str(path))
    except (TypeError, KeyError, AttributeError, ValueError) as exc:
        raise ValueError(f"{path}: not a run record ({type(exc).__name__}: {exc})") from exc


def run_records(data_dir: str | Path) -> list[Path]:
    """The record files, oldest first (their names sort by time); a URL store's, pulled into the mirror."""
    transfer.pull_folder(runs_folder(data_dir), "*.json")
    return sorted(runs_folder(data_dir).glob("*.json"))


def latest_run_of(data_dir: str | Path, model_key: str) -> RunRecord | None:
    """The newest readable record whose model is ``model_key``."""
    for path in reversed(run_records(data_dir)):
        try:
            record = read_run_record(path)
        except (OSError, ValueError) as exc:
            log.warning("run record %s cannot be read (%s); skipped", path, exc)
            continue
        if record.artifacts.model is not None and record.artifacts.model.key == model_key:
            return record
    return None
