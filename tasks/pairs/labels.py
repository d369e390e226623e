"""NLI labels (the one place that numbers them) → the training format each loss needs.

sentence-transformers matches inputs by column *order* and treats only columns named
``label`` or ``score`` as targets, so each format below fixes both names and order.
"""

from __future__ import annotations

import logging
import math
import re

import numpy as np
import pandas as pd

from tasks.pairs.tables import DataError

log = logging.getLogger(__name__)

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
LABEL_TEXT = re.compile(r"[+-]?[0-9]+(\.0*)?")  # "1", "1.0": how CSV and TSV hold an integer label


def as_label(value: object) -> int | None:
    """An NLI label as the integer 0, 1 or 2, from an integer, an integral float (1.0) or its text ("1");
    None for anything else: a boolean would pass for 0 or 1, a timestamp for its nanoseconds."""
    if isinstance(value, bool | np.bool_):
        return None
    if isinstance(value, str):
        if not LABEL_TEXT.fullmatch(value.strip()):
            return None
        value = float(value)
    if isinstance(value, int | np.integer):
        number = int(value)
    elif isinstance(value, float | np.floating) and math.isfinite(value) and float(value).is_integer():
        number = int(value)
    else:
        return None
    return number if number in NLI_LABELS else None


def normalise(text: str) -> str:
    """Case and whitespace folded: two texts equal after this are the same text to the negatives' guards."""
    return " ".join(text.lower().split())


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


def distinct_pairs(ranked: pd.DataFrame, loss: str, origin: str) -> pd.DataFrame:
    """Pairs whose positive is the anchor itself teach nothing (and are no pair to the negatives' guards):
    dropped with a warning; too few pairs left is an error, since each pair's negatives are the others'."""
    same = np.array([normalise(a) == normalise(p) for a, p in zip(ranked["anchor"], ranked["positive"])], bool)
    dropped = int(same.sum())
    if dropped:
        row = int(same.nonzero()[0][0])
        first = ranked["anchor"].iloc[row]
        log.warning(
            "%s: dropped %d of %d pair(s) whose positive equals the anchor (case, spacing ignored), pair %d %r first",
            *(origin, dropped, len(ranked), row, first),
        )
        ranked = ranked[~same].reset_index(drop=True)
    if len(ranked) < 2:
        after = f" once {dropped} whose positive equals the anchor are dropped" if dropped else ""
        raise DataError(
            f"{origin}: loss {loss!r} needs at least 2 pairs (each pair's negatives are the other pairs' texts), "
            f"but there are only {len(ranked)}{after}"
        )
    return ranked


def pairs_for_loss(pairs: pd.DataFrame, loss: str, origin: str = "source") -> pd.DataFrame:
    """The training format for ``loss``. A source of pairs or triplets (anchor, positive[, negatives]) is
    already in MNR's and GIST's format and passes through; the labelled losses need NLI rows. ``origin``
    (the file or dataset) names the source in errors."""
    if "anchor" in pairs.columns:
        if loss not in RANKING:
            raise ValueError(f"loss {loss!r} needs NLI labels; the source has columns {list(pairs.columns)}")
        return distinct_pairs(pairs.reset_index(drop=True), loss, origin)
    mappers = {"softmax": softmax_pairs, "cosine": cosine_pairs, "mnr": mnr_pairs, "gist": mnr_pairs}
    if loss not in mappers:
        raise ValueError(f"loss must be one of {LOSSES}, got {loss!r}")
    out = mappers[loss](pairs)
    if loss in RANKING and out.empty:
        counts = {NLI_LABELS.get(k, k): int(v) for k, v in pairs["label"].value_counts().sort_index().items()}
        raise DataError(
            f"{origin}: loss {loss!r} takes its pairs from entailment rows (label {ENTAILMENT}), but none of its "
            f"{len(pairs)} NLI row(s) is one ({counts}): no entailment rows to take positives from; "
            "use loss 'softmax' or 'cosine', or add entailment rows"
        )
    return distinct_pairs(out, loss, origin) if loss in RANKING else out
