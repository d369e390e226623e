"""Shared fixtures: offline everywhere, a tiny BERT built on the spot, small real data slices."""

from __future__ import annotations

import os

# Tests never reach beyond loopback: no hub, no trackers, no Prefect telemetry.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["HF_DATASETS_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ["WANDB_DISABLED"] = "true"
os.environ["PREFECT_SERVER_ANALYTICS_ENABLED"] = "false"
os.environ["TOKENIZERS_PARALLELISM"] = "false"

from pathlib import Path  # noqa: E402

import pandas as pd  # noqa: E402
import pytest  # noqa: E402

from bench.data import TINY_BERT, build_bert  # noqa: E402
from tasks.pairs.tables import SAMPLES  # noqa: E402
from tests.object_store import object_store, private_object_store, store_url  # noqa: E402, F401  (a real S3)


def build_tiny_bert(folder: Path) -> Path:
    """A 2-layer, 32-wide BERT with MiniLM's vocabulary, saved in sentence-transformers format."""
    return build_bert(folder, TINY_BERT, max_seq_length=64, name="tiny-bert")


@pytest.fixture(scope="session")
def tiny_bert(tmp_path_factory) -> Path:
    return build_tiny_bert(tmp_path_factory.mktemp("models"))


@pytest.fixture(scope="session")
def nli_sample() -> pd.DataFrame:
    """The first 300 rows of the bundled real MNLI sample."""
    return pd.read_parquet(SAMPLES / "mnli" / "train.parquet").head(300)


@pytest.fixture()
def nli_file(tmp_path, nli_sample) -> Path:
    path = tmp_path / "nli.parquet"
    nli_sample[["premise", "hypothesis", "label"]].to_parquet(path)
    return path
