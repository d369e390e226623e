"""When no pair can get a negative, ``mine`` says why (too few pairs, no entailment rows, one anchor everywhere)
instead of "found no negative for any of N pairs", and says it before a miner encodes anything."""

from __future__ import annotations

import pandas as pd
import pytest

from tasks.negatives.mining import mine
from tasks.negatives.strategies import MiningConfig


def nli(premises: list[str], hypotheses: list[str], labels: list[int]) -> pd.DataFrame:
    return pd.DataFrame({"premise": premises, "hypothesis": hypotheses, "label": labels})


def entailed(rows: pd.DataFrame) -> pd.DataFrame:
    kept = rows[rows["label"] == 0]
    return pd.DataFrame({"anchor": kept["premise"].to_numpy(), "positive": kept["hypothesis"].to_numpy()})


CASES = {
    "one row": (nli(["a cat sleeps"], ["a cat rests"], [0]), "needs at least 2 pairs"),
    "no entailment rows": (nli(["a", "b"], ["c", "d"], [1, 2]), "no entailment rows to take positives from"),
    "one anchor everywhere": (
        nli(["A cat sleeps", "a cat  sleeps", "a cat sleeps"], ["it rests", "it naps", "a dog barks"], [0, 0, 2]),
        "every pair has the same anchor ('A cat sleeps'), so no other anchor's text can be its negative",
    ),
}


@pytest.mark.parametrize("case", sorted(CASES))
@pytest.mark.parametrize("strategy", ["soft", "semi-hard"])
def test_why_no_pair_gets_a_negative_is_said_before_anything_is_encoded(case, strategy, tmp_path):
    rows, expected = CASES[case]
    with pytest.raises(ValueError) as error:  # semi-hard without a miner: the data's problem comes first
        mine(entailed(rows), rows, MiningConfig(strategy=strategy), None, str(tmp_path))
    message = str(error.value)
    assert message.startswith(f"negatives={strategy!r}: ") and expected in message
    assert "found no negative" not in message


def test_contradiction_says_what_the_source_lacks(tmp_path):
    rows = nli(["a", "b"], ["c", "d"], [0, 0])
    with pytest.raises(ValueError, match=r"hold no contradiction rows \(label 2\)"):
        mine(entailed(rows), rows, MiningConfig(strategy="contradiction"), None, str(tmp_path))
    rows = nli(["a", "b", "x"], ["c", "d", "e"], [0, 0, 2])
    with pytest.raises(ValueError, match="none of the 2 pairs' anchors has a contradiction hypothesis of its own"):
        mine(entailed(rows), rows, MiningConfig(strategy="contradiction"), None, str(tmp_path))


def test_a_source_that_can_give_negatives_still_mines(nli_sample, tmp_path):
    rows = nli_sample.head(40)
    triplets, facts = mine(entailed(rows), rows, MiningConfig(strategy="soft"), None, str(tmp_path))
    assert len(triplets) == facts["diagnostics"]["pairs_with_negatives"] > 0
