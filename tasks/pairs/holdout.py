"""The held-out split: anchors kept out of training, so that models are judged on the user's own data.

An anchor (an NLI premise, a pair's anchor) is held out when a hash of its normalised text falls below the
fraction. Every row of one anchor lands on the same side, and a row's side depends on its anchor alone,
never on the other rows: a folder source that grows keeps each old row on its side. A training row that
shares any text with the held-out side (its hypothesis is a held-out anchor or positive, say) is dropped
from training, not moved: no held-out text is trained on, and none can be mined as a negative, since
mining draws its candidates from the training side only.

The held-out side becomes a retrieval set: each anchor with a positive is a query, its positives the
relevant documents, and the corpus every held-out positive, the held-out anchors' other hypotheses and
distractor texts from the training side.
With ``eval_source`` the held-out side is that source's rows instead, and the training side loses the rows
that share a text with them.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from tasks.pairs.labels import ENTAILMENT, as_nli, normalise
from tasks.pairs.sources import negative_columns
from tasks.pairs.tables import DataError
from tasks.store.catalog import CORPUS_FILE, QUERIES_FILE

MAX_FRACTION = 0.5
MIN_QUERIES = 50  # fewer, and a metric's run-to-run noise swamps any gain
DISTRACTORS = 2_000  # training-side texts in the corpus (README: cost, choice)


@dataclass(frozen=True)
class Split:
    """The source's rows on each side, in its own layout, and the training rows dropped for sharing a text."""

    train: pd.DataFrame
    held: pd.DataFrame
    dropped: int


@dataclass(frozen=True)
class RetrievalSet:
    """Queries, the corpus, and for each query the corpus positions of its relevant documents."""

    queries: list[str]
    corpus: list[str]
    relevant: list[list[int]]
    distractors: int  # the corpus's last ``distractors`` texts are relevant to no query (held-out and training side)

    def sizes(self) -> dict[str, int]:
        return {"queries": len(self.queries), "corpus": len(self.corpus), "distractors": self.distractors}


def check_holdout(fraction: float, eval_source: str | None, distractors: int) -> None:
    """Fail before anything is read, naming the parameter."""
    if isinstance(fraction, bool) or not isinstance(fraction, int | float) or not 0 <= fraction <= MAX_FRACTION:
        raise ValueError(f"parameter eval_holdout: must be a fraction in [0, {MAX_FRACTION}], got {fraction!r}")
    if eval_source is not None and fraction:
        raise ValueError(f"parameter eval_holdout: {fraction} with an eval_source ({eval_source!r}); the held-out "
                         "set is then that source's rows: leave eval_holdout at 0")  # fmt: skip
    if isinstance(distractors, bool) or not isinstance(distractors, int) or distractors < 0:
        raise ValueError(f"parameter eval_distractors: must be 0 or more, got {distractors!r}")


def holding_out(fraction: float, eval_source: str | None) -> bool:
    return bool(fraction) or eval_source is not None


def _unit(text: str) -> float:
    """A text's place in [0, 1), from its normalised form only (stable across runs, machines, row orders)."""
    return int.from_bytes(hashlib.sha256(normalise(text).encode("utf-8")).digest()[:8], "big") / 2.0**64


def anchor_column(rows: pd.DataFrame) -> str:
    return "premise" if "premise" in rows.columns else "anchor"


def text_columns(rows: pd.DataFrame) -> list[str]:
    if "premise" in rows.columns:
        return ["premise", "hypothesis"]
    return ["anchor", "positive", *negative_columns(rows.columns)]


def _texts(rows: pd.DataFrame) -> set[str]:
    return {normalise(t) for column in text_columns(rows) for t in rows[column].dropna()}


def _without_shared(train: pd.DataFrame, held: pd.DataFrame) -> tuple[pd.DataFrame, int]:
    """Training rows that share no text with the held-out rows, and how many did."""
    held_texts = _texts(held)
    shared = np.zeros(len(train), bool)
    for column in text_columns(train):
        shared |= np.array([isinstance(t, str) and normalise(t) in held_texts for t in train[column]], bool)
    return train[~shared].reset_index(drop=True), int(shared.sum())


def split(rows: pd.DataFrame, fraction: float) -> Split:
    """The rows whose anchor hashes below ``fraction`` held out; the rest, less those sharing a text, trained on."""
    held = np.array([_unit(a) < fraction for a in rows[anchor_column(rows)]], bool)
    train, dropped = _without_shared(rows[~held].reset_index(drop=True), rows[held])
    return Split(train, rows[held].reset_index(drop=True), dropped)


def against(rows: pd.DataFrame, evaluation: pd.DataFrame) -> Split:
    """``eval_source``'s rows held out: the training side is the source less the rows sharing a text with them."""
    train, dropped = _without_shared(rows.reset_index(drop=True), evaluation)
    return Split(train, evaluation.reset_index(drop=True), dropped)


def retrieval_set(split: Split, distractors: int, where: str, minimum: int = MIN_QUERIES) -> RetrievalSet:
    """Each held-out anchor with a positive (an entailed hypothesis) a query, its distinct positives relevant.
    The corpus: the held-out positives; the held-out anchors' other hypotheses (neutral, contradiction: close
    in words, not in meaning, and never trained on); then up to ``distractors`` distinct training-side
    hypotheses, the first by a hash of their text. ``where`` (the parameter and value) names a split too small."""
    held = as_nli(split.held)
    entailed = held[held["label"] == ENTAILMENT]
    queries: dict[str, str] = {}
    relevant: dict[str, list[int]] = {}
    corpus: dict[str, int] = {}  # normalised text -> position
    texts: list[str] = []
    for anchor, positive in zip(entailed["premise"], entailed["hypothesis"]):
        key, doc = normalise(anchor), normalise(positive)
        if key == doc:
            continue
        if doc not in corpus:
            corpus[doc] = len(texts)
            texts.append(positive)
        queries.setdefault(key, anchor)
        if corpus[doc] not in relevant.setdefault(key, []):
            relevant[key].append(corpus[doc])
    if len(queries) < minimum:
        raise DataError(f"{where} holds out {len(queries)} queries (anchors with a positive), fewer than "
                        f"{minimum}: hold out more, or add rows")  # fmt: skip
    positives = len(texts)
    for text in held.loc[held["label"] != ENTAILMENT, "hypothesis"].dropna():
        if normalise(text) not in corpus:
            corpus[normalise(text)] = len(texts)
            texts.append(text)
    pool = {normalise(t): t for t in as_nli(split.train)["hypothesis"].dropna() if normalise(t) not in corpus}
    chosen = sorted(pool, key=lambda k: (_unit(k), k))[:distractors]
    texts += [pool[k] for k in chosen]
    return RetrievalSet(list(queries.values()), texts, [relevant[k] for k in queries], len(texts) - positives)


def write_retrieval(retrieval: RetrievalSet, folder: Path) -> None:
    queries = pa.table({"query": retrieval.queries, "relevant": pa.array(retrieval.relevant, pa.list_(pa.int64()))})
    held = len(retrieval.corpus) - retrieval.distractors
    corpus = pa.table({"text": retrieval.corpus, "distractor": [i >= held for i in range(len(retrieval.corpus))]})
    pq.write_table(queries, folder / QUERIES_FILE)
    pq.write_table(corpus, folder / CORPUS_FILE)


def read_retrieval(folder: Path) -> RetrievalSet:
    queries, corpus = pq.read_table(folder / QUERIES_FILE), pq.read_table(folder / CORPUS_FILE)
    distractors = int(np.sum(corpus.column("distractor").to_numpy()))
    return RetrievalSet(queries.column("query").to_pylist(), corpus.column("text").to_pylist(),
                        queries.column("relevant").to_pylist(), distractors)  # fmt: skip
