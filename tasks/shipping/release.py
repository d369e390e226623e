"""The release: one path from a trained model to a folder to serve or publish, for the flow and the CLI alike.

``ship`` exports the formats asked for (each a keyed artifact), measures each against the PyTorch model
(the ``comparisons`` artifact) and leaves out any whose scores moved beyond its tolerance, then lays out
the release folder: the model's files (copied, so an edit to a release never touches the model), its card
(sentence-transformers' README plus the lineage, and ``lineage.json``) and the exports where
sentence-transformers looks for them (``onnx/``, ``openvino/``; static: ``static/``), the int8 ONNX file also
where transformers.js and Optimum look (``onnx/model_quantized.onnx``).
"""

from __future__ import annotations

import hashlib
import json
import shutil
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import pandas as pd

from tasks.evaluation.data import evaluation_texts
from tasks.evaluation.settings import EvalSettings
from tasks.models.resolve import ResolvedModel
from tasks.report import plots
from tasks.shipping import card, compare, exports
from tasks.store import environment
from tasks.store.artifacts import ArtifactRef, Built, materialize, write_parquet
from tasks.store.catalog import COMPARISON_FILE, COMPARISON_MARKDOWN, COMPARISON_PLOT, MODEL_FOLDER, VERSIONS

COMPARED_TEXTS = 4000  # about this many evaluation texts of every kind, for the speed measurement


@dataclass(frozen=True)
class Shipment:
    """What a release is made of: every export, the comparison that judged them, and the release folder."""

    exports: dict[str, ArtifactRef]  # every format asked for
    comparison: ArtifactRef | None  # None: not compared (asked not to, or no export)
    left_out: tuple[str, ...]  # formats whose scores left their tolerance: not in the release
    release: ArtifactRef

    @property
    def folder(self) -> Path:
        return self.release.folder / MODEL_FOLDER


def export_artifact(model: ResolvedModel, fmt: str, data_dir: str, parents: Sequence[ArtifactRef] = ()) -> ArtifactRef:
    """``model`` in one serving format (``exports.FORMATS``); keyed by the model's weights, the format and the
    exporting libraries' versions (their +cpu / +cu128 build tags export the same)."""
    spec = exports.FORMATS[exports.check_formats([fmt], "format")[0]]

    def build(folder) -> Built:
        record = exports.export_model(Path(model.location), fmt, folder / MODEL_FOLDER, scratch=folder / ".scratch")
        shutil.rmtree(folder / ".scratch", ignore_errors=True)
        return Built(None, {"export": record})

    versions = {name: (v or "").split("+")[0] or None for name, v in environment.versions(spec.libraries).items()}
    params = {"model": model.fingerprint, "format": fmt, "libraries": versions}
    return materialize(data_dir, "exports", VERSIONS["exports"], params, list(parents), build,
                       facts={"model": asdict(model)})  # fmt: skip


def comparison_artifact(
    model: ResolvedModel, shipped: dict[str, ArtifactRef], settings: EvalSettings, data_dir: str,
    parents: Sequence[ArtifactRef] = (),
) -> ArtifactRef:  # fmt: skip
    """Every export against the PyTorch model: scores, CPU speed, load time, size (a table and a picture)."""

    def build(folder) -> int:
        texts = evaluation_texts()
        texts = texts[:: max(1, len(texts) // COMPARED_TEXTS)]
        table = compare.compare_formats(Path(model.location), {f: r.folder / MODEL_FOLDER for f, r in shipped.items()},
                                        settings, texts, folder / "evaluation")  # fmt: skip
        (folder / COMPARISON_MARKDOWN).write_text(compare.markdown(table))
        plots.format_comparison(table, folder / COMPARISON_PLOT)
        return write_parquet(table, folder / COMPARISON_FILE)

    params = {"settings": settings.record(), "exports": {f: r.key for f, r in shipped.items()}}
    return materialize(data_dir, "comparisons", VERSIONS["comparisons"], params, [*parents, *shipped.values()], build)


def within_tolerance(comparison: ArtifactRef) -> set[str]:
    """The export formats whose scores stayed within their tolerance of the PyTorch model's."""
    table = pd.read_parquet(comparison.folder / COMPARISON_FILE)
    return set(table.loc[table["within_tolerance"], "format"])


def lay_out(model_folder: Path, out: Path, shipped: dict[str, ArtifactRef]) -> None:
    """The model's files and the exports' files in sentence-transformers' places, each ONNX file also under the
    names other runtimes look for (``exports.RELEASE_ALIASES``). Copied from the model and the exports, never
    linked: their files are checked against their own manifests, so a release must not share their inodes; an
    alias is a hard link to the release's own copy (one inode inside one artifact, each name in its manifest)."""
    exports.copy_model_files(model_folder, out, weights=True)
    for fmt, ref in shipped.items():
        source = ref.folder / MODEL_FOLDER
        if fmt == "static":
            shutil.copytree(source, out / exports.STATIC_FOLDER)
            continue
        for path in (source / exports.FORMATS[fmt].file).parent.iterdir():
            (out / path.parent.name).mkdir(exist_ok=True)
            shutil.copy2(path, out / path.parent.name / path.name)
        for alias in exports.RELEASE_ALIASES.get(fmt, ()):
            exports.link_or_copy(out / exports.FORMATS[fmt].file, out / alias)


def release_artifact(
    model: ResolvedModel, lineage: dict, shipped: dict[str, ArtifactRef], data_dir: str,
    parents: Sequence[ArtifactRef] = (),
) -> ArtifactRef:  # fmt: skip
    """One folder to serve or publish: the model, its card (README.md with the lineage, lineage.json) and the
    exports; keyed by the model, the lineage and the exports."""

    def build(folder) -> Built:
        out = folder / MODEL_FOLDER
        lay_out(Path(model.location), out, shipped)
        card.write_card(Path(model.location), out, lineage, list(shipped))
        return Built(None, {"formats": list(shipped)})

    lineage_hash = hashlib.sha256(json.dumps(lineage, sort_keys=True, default=str).encode()).hexdigest()[:16]
    params = {"model": model.fingerprint, "lineage": lineage_hash, "exports": {f: r.key for f, r in shipped.items()}}
    refs = [*parents, *shipped.values()]
    return materialize(data_dir, "releases", VERSIONS["releases"], params, refs, build, facts={"lineage": lineage})


def ship(
    model: ResolvedModel,
    formats: Sequence[str],
    lineage: dict,
    data_dir: str,
    settings: EvalSettings | None = None,
    parents: Sequence[ArtifactRef] = (),
) -> Shipment:
    """Export, judge and release ``model``. ``settings``: how to measure the exports against the model (None:
    not measured, every export is released); an export whose scores leave its tolerance is left out."""
    shipped = {fmt: export_artifact(model, fmt, data_dir, parents) for fmt in formats}
    comparison, left_out = None, ()
    if shipped and settings is not None:
        comparison = comparison_artifact(model, shipped, settings, data_dir, parents)
        kept = within_tolerance(comparison)
        left_out = tuple(fmt for fmt in shipped if fmt not in kept)  # the caller says so: Prefect's log, the CLI
    released = {fmt: ref for fmt, ref in shipped.items() if fmt not in left_out}
    release = release_artifact(model, lineage, released, data_dir, parents)
    return Shipment(shipped, comparison, left_out, release)
