"""The champion on the user's own metric: a held-out metric promotes with a paired bootstrap over its queries,
and a new held-out split (a grown source) scores the champion on it before comparing."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from tasks.promotion import promote_if_better
from tasks.store.artifacts import ArtifactRef
from tasks.store.champion import read_champion

METRIC = "holdout_ndcg@10"
SPLIT_1 = {"tasks": [], "limit": None, "dims": [], "data": {"stsb": "bundled:x"}, "holdout": "k1"}
SPLIT_2 = SPLIT_1 | {"holdout": "k2"}


def _model(tmp_path, key: str) -> ArtifactRef:
    return ArtifactRef("models", key, str(tmp_path / "artifacts" / "models" / key))


def _queries(path, values: np.ndarray) -> str:
    pd.DataFrame({"query": np.arange(len(values)), "ndcg@10": values}).to_parquet(path)
    return str(path)


@pytest.fixture()
def queries(tmp_path) -> dict[str, str]:
    """Per-query files on 200 queries: a champion, one better by chance only, and one clearly better."""
    rng = np.random.default_rng(3)
    base = rng.uniform(0.2, 0.9, 200)
    return {
        "champion": _queries(tmp_path / "champion.parquet", base),
        "chance": _queries(tmp_path / "chance.parquet", np.clip(base + rng.normal(0.004, 0.1, 200), 0, 1)),
        "clear": _queries(tmp_path / "clear.parquet", np.clip(base + 0.05 + rng.normal(0, 0.02, 200), 0, 1)),
    }


def _mean(path: str) -> float:
    return float(pd.read_parquet(path)["ndcg@10"].mean())


def _seed(tmp_path, queries: dict[str, str], evaluation: dict = SPLIT_1) -> None:
    first = promote_if_better(tmp_path, _model(tmp_path, "a"), {METRIC: _mean(queries["champion"])}, METRIC,
                              evaluation, queries=queries["champion"])  # fmt: skip
    assert first["promoted"]


def test_a_held_out_gain_is_promoted_only_when_its_bootstrap_over_queries_clears_zero(tmp_path, queries):
    _seed(tmp_path, queries)
    kept = read_champion(tmp_path)["queries"]
    assert kept != queries["champion"] and _mean(kept) == _mean(queries["champion"])  # a copy beside the record

    chance = promote_if_better(tmp_path, _model(tmp_path, "b"), {METRIC: _mean(queries["chance"])}, METRIC, SPLIT_1,
                               queries=queries["chance"])  # fmt: skip
    assert chance["gain"] >= 0.003  # min_gain alone would have promoted it
    assert not chance["promoted"] and chance["rule"] == "bootstrap" and "reaches 0" in chance["reason"]

    clear = promote_if_better(tmp_path, _model(tmp_path, "c"), {METRIC: _mean(queries["clear"])}, METRIC, SPLIT_1,
                              queries=queries["clear"])  # fmt: skip
    assert clear["promoted"] and clear["rule"] == "bootstrap"
    assert 0 < clear["interval"]["low"] <= clear["gain"] <= clear["interval"]["high"]
    assert read_champion(tmp_path)["model_key"] == "c"


def test_a_new_split_scores_the_champion_on_it_before_comparing(tmp_path, queries):
    """The source grew: the split's key moved. The champion (scored on k1) is re-evaluated on k2, the
    challenger's split, and compared there; the challenger is never scored the champion's (old) way."""
    _seed(tmp_path, queries)
    asked = []

    def champion_on(record, settings):
        asked.append((record["model_key"], settings))
        return {METRIC: _mean(queries["champion"]) + 0.2}, None, queries["champion"]

    def never(settings):
        pytest.fail("the challenger was re-evaluated on the champion's old split")

    score = _mean(queries["clear"])
    kept = promote_if_better(tmp_path, _model(tmp_path, "b"), {METRIC: score}, METRIC, SPLIT_2, never,
                             queries=queries["clear"], champion_on=champion_on)  # fmt: skip
    assert asked == [("a", SPLIT_2)]
    assert not kept["promoted"] and kept["champion_rescored"] == pytest.approx(_mean(queries["champion"]) + 0.2)
    assert (
        "the champion re-evaluated on the held-out split holdout/k2 (it had been scored on holdout/k1)"
        in (kept["reason"])
    )

    promoted = promote_if_better(tmp_path, _model(tmp_path, "c"), {METRIC: score}, METRIC, SPLIT_2, never,
                                 queries=queries["clear"],
                                 champion_on=lambda r, s: ({METRIC: _mean(queries["champion"])}, None,
                                                           queries["champion"]))  # fmt: skip
    assert promoted["promoted"] and promoted["rule"] == "bootstrap"  # bootstrapped against the re-evaluation's file
    record = read_champion(tmp_path)
    assert record["model_key"] == "c" and record["evaluation"]["holdout"] == "k2"


def test_a_champion_promoted_before_held_out_splits_is_scored_on_the_challengers(tmp_path, queries):
    """Moving a data folder's champion to the user's metric: the champion (promoted on STS-B, no split) is
    scored on the challenger's split, not left uncompared."""
    stsb = {k: v for k, v in SPLIT_1.items() if k != "holdout"}
    assert promote_if_better(tmp_path, _model(tmp_path, "a"), {"stsb_test_spearman": 0.8}, "stsb_test_spearman",
                             stsb)["promoted"]  # fmt: skip
    decision = promote_if_better(tmp_path, _model(tmp_path, "b"), {METRIC: _mean(queries["clear"])}, METRIC, SPLIT_1,
                                 queries=queries["clear"],
                                 champion_on=lambda r, s: ({METRIC: _mean(queries["champion"])}, None,
                                                           queries["champion"]))  # fmt: skip
    assert decision["promoted"] and "re-evaluated on the held-out split holdout/k1" in decision["reason"]
    without = promote_if_better(tmp_path, _model(tmp_path, "c"), {METRIC: 0.99}, METRIC, SPLIT_2)
    assert not without["promoted"] and without["rule"] == "not compared"
    assert "not scored on the held-out split holdout/k2" in without["reason"]
