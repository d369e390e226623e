"""MTEB's own Banking77Classification, fed from local data, with mteb's result cache bypassed.

mteb keys cached results by model name and revision; every local model is named alike, so
a cache would hand a retrained model its predecessor's score. ``cache=None`` with
``overwrite_strategy="always"`` makes every call score the model in hand.
"""

from __future__ import annotations

import json
import logging
import warnings
from pathlib import Path

import pandas as pd


def _dataset(splits: dict[str, pd.DataFrame]):
    import datasets

    return datasets.DatasetDict(
        {name: datasets.Dataset.from_pandas(df[["text", "label"]], preserve_index=False) for name, df in splits.items()}
    )


def banking77_accuracy(model, splits: dict[str, pd.DataFrame], out_dir: Path, batch_size: int = 64) -> float:
    """Accuracy of mteb's Banking77Classification (logistic regression on embeddings, 10 runs)."""
    import mteb
    from mteb.models import SentenceTransformerEncoderWrapper

    task = mteb.get_task("Banking77Classification")
    task.dataset = _dataset(splits)  # mteb would otherwise load mteb/banking77 from the hub
    task.data_loaded = True
    for name in ("mteb", "datasets"):
        logging.getLogger(name).setLevel(logging.ERROR)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result = mteb.evaluate(
            SentenceTransformerEncoderWrapper(model),
            task,
            cache=None,
            overwrite_strategy="always",
            co2_tracker=False,
            encode_kwargs={"batch_size": batch_size},
            show_progress_bar=True,
            prediction_folder=None,
            raise_error=True,
        )
    scores = dict(result.task_results[0].scores["test"][0])
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "banking77.json").write_text(json.dumps(scores, indent=2, default=str))
    return float(scores["accuracy"])
