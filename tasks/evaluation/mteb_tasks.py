"""MTEB tasks scored by mteb itself: bundled data offline, the hub otherwise, texts encoded in token order.

Banking77Classification and STSBenchmark run from the copies under ``data/samples`` (the
bundled STS-B test split is the pairs MTEB scores), so the anchors need no network. Any other
task loads from the hub; offline, it fails before training with a message saying what to do.
mteb keys cached results by model name and revision, and every local model is named alike, so
its cache would hand a retrained model its predecessor's score: ``cache=None`` with
``overwrite_strategy="always"`` scores the model in hand. Texts are encoded in batches of
similar token length (sentence-transformers orders one call by characters and pads more).
"""

from __future__ import annotations

import json
import logging
import re
import warnings
from collections.abc import Callable
from pathlib import Path

import pandas as pd
from tqdm.auto import tqdm

from tasks.models.encoding import encode_in_token_order
from tasks.store.artifacts import file_sha256

BUNDLED = ("Banking77Classification", "STSBenchmark")
# Names kept from before any task could be chosen: the default task's metric keeps its old name.
ALIASES = {"Banking77Classification": "banking77_accuracy"}


def get_task(name: str):
    """mteb's task of that name; an unknown one fails with the parameter's name and close matches."""
    import difflib

    import mteb

    try:
        return mteb.get_task(name)
    except (KeyError, ValueError) as exc:
        names = [t.metadata.name for t in mteb.get_tasks()]
        close = difflib.get_close_matches(name, names, n=3)
        hint = f"; did you mean {close}?" if close else ""
        raise ValueError(f"parameter eval_tasks: {name!r} is not an MTEB task{hint}") from exc


def metric_name(task_name: str) -> str:
    """The metric a task contributes: its alias, else ``<task in lower case>_<its main score>``."""
    if task_name in ALIASES:
        return ALIASES[task_name]
    return f"{task_name.lower()}_{get_task(task_name).metadata.main_score}"


def check_tasks(names: list[str] | tuple[str, ...], hub_reachable: Callable[[], bool]) -> None:
    """Before any model loads: every name is an MTEB task, and a task that is not bundled can reach the hub."""
    for name in names:
        get_task(name)
    remote = [name for name in names if name not in BUNDLED]
    if remote and not hub_reachable():
        raise ValueError(
            f"parameter eval_tasks: {remote} load their data from the Hugging Face Hub, which cannot be reached "
            f"(or HF_HUB_OFFLINE is set). Run with network, or choose among the bundled tasks {list(BUNDLED)}."
        )


def data_fingerprint(name: str, bundled_files: dict[str, list[Path]]) -> str:
    """What a task's scores were computed on: the bundled files' hashes, or the hub dataset's pinned revision."""
    if name in bundled_files:
        return "bundled:" + ",".join(file_sha256(p)[:16] for p in bundled_files[name])
    dataset = get_task(name).metadata.dataset
    return f"hub:{dataset.get('path')}@{dataset.get('revision')}"


def _dataset(splits: dict[str, pd.DataFrame], columns: list[str]):
    import datasets

    return datasets.DatasetDict(
        {name: datasets.Dataset.from_pandas(df[columns], preserve_index=False) for name, df in splits.items()}
    )


class Tally:
    """A tqdm bar that also tells ``on_texts`` how many texts each batch encoded (for a progress artifact)."""

    def __init__(self, bar, on_texts: Callable[[int], None] | None) -> None:
        self.bar, self.on_texts = bar, on_texts

    def update(self, n: int) -> None:
        self.bar.update(n)
        if self.on_texts:
            self.on_texts(n)


def _token_ordered_wrapper(model, on_texts: Callable[[int], None] | None, pool=None):
    """mteb's SentenceTransformerEncoderWrapper whose text encoding runs in token-length order (``pool``: the
    run's cluster, whose workers call the function and prompt mteb's wrapper would)."""
    from mteb.models import SentenceTransformerEncoderWrapper
    from mteb.models.sentence_transformer_wrapper import _resolve_prompt, _select_encode_function

    class TokenOrderedEncoder(SentenceTransformerEncoderWrapper):
        def encode(self, inputs, *, task_metadata, hf_split, hf_subset, prompt_type=None, **kwargs):
            import datasets
            from torch.utils.data import DataLoader

            features = getattr(inputs.dataset, "features", {}) or {}
            if any(k in features for k in ("image", "audio", "video")):
                return super().encode(
                    inputs, task_metadata=task_metadata, hf_split=hf_split, hf_subset=hf_subset,
                    prompt_type=prompt_type, **kwargs,
                )  # fmt: skip
            texts = [text for batch in inputs for text in batch["text"]]

            def encode_batch(batch: list[str], **kw):
                loader = DataLoader(datasets.Dataset.from_dict({"text": batch}), batch_size=len(batch))
                return super(TokenOrderedEncoder, self).encode(
                    loader, task_metadata=task_metadata, hf_split=hf_split, hf_subset=hf_subset,
                    prompt_type=prompt_type, **kw,
                )  # fmt: skip

            desc = f"evaluating: {task_metadata.name} {hf_split}"
            with tqdm(total=len(texts), desc=desc, unit="text") as bar:
                rest = {k: v for k, v in kwargs.items() if k not in ("batch_size", "show_progress_bar")}
                size = kwargs.get("batch_size", 32)
                if pool is not None:
                    prompt = _resolve_prompt(self.model_prompts, task_metadata, prompt_type)
                    function = _select_encode_function(self.model, prompt_type).__name__
                    return encode_in_token_order(self.model, texts, size, Tally(bar, on_texts), pool=pool,
                                                 function=function, prompt=prompt, **rest)  # fmt: skip
                return encode_in_token_order(self.model, texts, size, Tally(bar, on_texts), encode_batch, **rest)

    return TokenOrderedEncoder(model)


def load_task(name: str, local: dict[str, pd.DataFrame] | None):
    """The task with its data: the bundled splits when given, else whatever mteb loads (the hub)."""
    task = get_task(name)
    if local is not None:
        columns = ["text", "label"] if name == "Banking77Classification" else ["sentence1", "sentence2", "score"]
        task.dataset = _dataset(local, columns)  # mteb would otherwise load it from the hub
        task.data_loaded = True
    return task


def evaluate_task(
    model,
    name: str,
    local: dict[str, pd.DataFrame] | None,
    out_dir: Path,
    batch_size: int = 64,
    on_texts: Callable[[int], None] | None = None,
    pool=None,
) -> float:
    """The task's main score for ``model``, by mteb's own evaluation (its texts encoded on the run's cluster
    when ``pool`` is one); mteb's scores are kept as JSON."""
    import mteb

    task = load_task(name, local)
    for logger in ("mteb", "datasets"):
        logging.getLogger(logger).setLevel(logging.ERROR)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result = mteb.evaluate(
            _token_ordered_wrapper(model, on_texts, pool),
            task,
            cache=None,
            overwrite_strategy="always",
            co2_tracker=False,
            encode_kwargs={"batch_size": batch_size},
            show_progress_bar=False,
            prediction_folder=None,
            raise_error=True,
        )
    task_result = result.task_results[0]
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"{re.sub(r'[^A-Za-z0-9_.-]', '_', name)}.json"
    path.write_text(json.dumps(task_result.scores, indent=2, default=str))
    return float(task_result.get_score())
