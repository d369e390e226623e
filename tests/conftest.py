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

from tasks.models import bundled_minilm_dir  # noqa: E402
from tasks.sources import SAMPLES  # noqa: E402


def build_tiny_bert(folder: Path) -> Path:
    """A 2-layer, 32-wide BERT with MiniLM's vocabulary, saved in sentence-transformers format."""
    import torch
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.models import Pooling, Transformer
    from transformers import BertConfig, BertModel, BertTokenizerFast

    torch.manual_seed(0)
    hf_dir = folder / "hf"
    tokenizer = BertTokenizerFast(vocab_file=str(bundled_minilm_dir() / "vocab.txt"), do_lower_case=True)
    config = BertConfig(
        vocab_size=tokenizer.vocab_size,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=128,
    )
    BertModel(config).save_pretrained(hf_dir)
    tokenizer.save_pretrained(hf_dir)
    transformer = Transformer(str(hf_dir), max_seq_length=64)
    model = SentenceTransformer(modules=[transformer, Pooling(transformer.get_embedding_dimension(), "mean")])
    out = folder / "tiny-bert"
    model.save(str(out))
    return out


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
