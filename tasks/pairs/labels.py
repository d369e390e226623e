"""NLI labels (the one place that numbers them) → the training format each loss needs.

sentence-transformers matches inputs by column *order* and treats only columns named
``label`` or ``score`` as targets, so each format below fixes both names and order.
"""

from __future__ import annotations

import pandas as pd

ENTAILMENT, NEUTRAL, CONTRADICTION = 0, 1, 2  # as GLUE MNLI, SNLI and the hub's NLI sets number them
NLI_LABELS = {ENTAILMENT: "entailment", NEUTRAL: "neutral", CONTRADICTION: "contradiction"}
LOSSES = ("softmax", "cosine", "mnr", "gist")
RANKING = ("mnr", "gist")  # in-batch negatives: (anchor, positive[, negative...]) rows
COLUMNS = {
    "softmax": ["premise", "hypothesis", "label"],
    "cosine": ["sentence1", "sentence2", "score"],
    "mnr": ["anchor", "positive"],
    "gist": ["anchor", "positive"],
}


def softmax_pairs(pairs: pd.DataFrame) -> pd.DataFrame:
    """SoftmaxLoss(num_labels=3): the three NLI labels as they are."""
    return pairs[["premise", "hypothesis", "label"]].reset_index(drop=True)


def cosine_pairs(pairs: pd.DataFrame) -> pd.DataFrame:
    """CosineSimilarityLoss: entailment → 1.0, neutral and contradiction → 0.0."""
    return pd.DataFrame(
        {
            "sentence1": pairs["premise"].to_numpy(),
            "sentence2": pairs["hypothesis"].to_numpy(),
            "score": (pairs["label"] == ENTAILMENT).astype("float64").to_numpy(),
        }
    )


def mnr_pairs(pairs: pd.DataFrame) -> pd.DataFrame:
    """MultipleNegativesRankingLoss and GISTEmbedLoss: entailment rows as (anchor = premise, positive = hypothesis)."""
    entailed = pairs[pairs["label"] == ENTAILMENT]
    return pd.DataFrame({"anchor": entailed["premise"].to_numpy(), "positive": entailed["hypothesis"].to_numpy()})


def as_nli(rows: pd.DataFrame) -> pd.DataFrame:
    """Pairs or triplets of a source seen as entailment rows (premise = anchor, hypothesis = positive), so that
    negatives are drawn and guarded the same way whatever the source's kind; NLI rows as they are."""
    if "premise" in rows.columns:
        return rows
    return pd.DataFrame({"premise": rows["anchor"].to_numpy(), "hypothesis": rows["positive"].to_numpy(),
                         "label": ENTAILMENT})  # fmt: skip


def pairs_for_loss(pairs: pd.DataFrame, loss: str) -> pd.DataFrame:
    """The training format for ``loss``. A source of pairs or triplets (anchor, positive[, negatives]) is
    already in MNR's and GIST's format and passes through; the labelled losses need NLI rows."""
    if "anchor" in pairs.columns:
        if loss not in RANKING:
            raise ValueError(f"loss {loss!r} needs NLI labels; the source has columns {list(pairs.columns)}")
        return pairs.reset_index(drop=True)
    mappers = {"softmax": softmax_pairs, "cosine": cosine_pairs, "mnr": mnr_pairs, "gist": mnr_pairs}
    if loss not in mappers:
        raise ValueError(f"loss must be one of {LOSSES}, got {loss!r}")
    return mappers[loss](pairs)
