"""What the benchmarks train and mine on: the bundled MNLI sample, the bundled MiniLM, and BERTs built
from a config with the bundled MiniLM tokenizer (the same uncased vocabulary as bert-base-uncased)."""

from __future__ import annotations

from pathlib import Path

MINILM = "sentence-transformers/all-MiniLM-L6-v2"
BERT_BASE = {"hidden_size": 768, "num_hidden_layers": 12, "num_attention_heads": 12, "intermediate_size": 3072}
TINY_BERT = {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2, "intermediate_size": 64}


def build_bert(folder: Path, shape: dict, max_seq_length: int | None = None, name: str = "bert") -> Path:
    """A randomly initialised BERT of ``shape`` with mean pooling, saved in sentence-transformers format.

    The hub cannot be reached here: bert-base-uncased's architecture with random weights costs the
    same FLOPs per token, which is what throughput benchmarks need.
    """
    import torch
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.models import Pooling, Transformer
    from transformers import BertConfig, BertModel, BertTokenizerFast

    from tasks.models.resolve import bundled_minilm_dir

    torch.manual_seed(0)
    hf_dir = folder / f"{name}-hf"
    # the bundled MiniLM's own tokenizer files: BertTokenizerFast(vocab_file=...) gives a 5-token
    # vocabulary under transformers 5, which turns every word into [UNK]
    tokenizer = BertTokenizerFast.from_pretrained(str(bundled_minilm_dir()))
    assert tokenizer.vocab_size == 30522, tokenizer.vocab_size
    positions = 512 if max_seq_length is None else max(128, max_seq_length)
    config = BertConfig(vocab_size=tokenizer.vocab_size, max_position_embeddings=positions, **shape)
    BertModel(config).save_pretrained(hf_dir)
    tokenizer.save_pretrained(hf_dir)
    transformer = Transformer(str(hf_dir), max_seq_length=max_seq_length or positions)
    model = SentenceTransformer(modules=[transformer, Pooling(transformer.get_embedding_dimension(), "mean")])
    out = folder / name
    model.save(str(out))
    return out


def triplets_frame(negatives: str = "soft", folder: Path | None = None, rows: int | None = None):
    """(anchor, positive, negative) of the bundled sample: soft, or semi-hard mined with MiniLM;
    ``rows`` repeats them up to that many (the seed trains on 16,875 MNR pairs)."""
    import pandas as pd

    from tasks.models.resolve import resolve_model
    from tasks.negatives.strategies import MiningConfig, mine_semi_hard, soft_negatives
    from tasks.pairs.labels import mnr_pairs
    from tasks.pairs.sources import DEFAULT_NLI_SAMPLE

    raw = pd.read_parquet(DEFAULT_NLI_SAMPLE)[["premise", "hypothesis", "label"]]
    mnr = mnr_pairs(raw)
    if negatives == "semi-hard":
        assert folder is not None
        mined, _ = mine_semi_hard(mnr, raw, resolve_model(MINILM), folder, MiningConfig(strategy="semi-hard"))
    else:
        mined = soft_negatives(mnr, raw, MiningConfig())
    frame = mined[["anchor", "positive", "negative"]].reset_index(drop=True)
    if rows:
        frame = pd.concat([frame] * (rows // len(frame) + 1), ignore_index=True).head(rows)
    return frame


def triplets(folder: Path, negatives: str = "soft") -> Path:
    """The triplets as Parquet, for benchmarks that hand a file to a fresh process."""
    path = folder / "triplets.parquet"
    triplets_frame(negatives, folder).to_parquet(path)
    return path
