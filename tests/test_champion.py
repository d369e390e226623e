"""Champion promotion: only a really better model (min_gain, a bootstrap interval above 0 for STS-B) replaces
the champion, one run at a time; both are kept."""

from __future__ import annotations

import pytest

from tasks.promotion import MIN_GAIN, promote_if_better
from tasks.store.artifacts import ArtifactRef
from tasks.store.champion import read_champion


def _model(tmp_path, key: str) -> ArtifactRef:
    return ArtifactRef("models", key, str(tmp_path / "artifacts" / "models" / key))


def test_first_model_becomes_champion(tmp_path):
    decision = promote_if_better(tmp_path, _model(tmp_path, "a"), {"stsb_test_spearman": 0.5}, "stsb_test_spearman")
    assert decision["promoted"] and decision["champion_before"] is None
    assert read_champion(tmp_path)["model_key"] == "a"


def test_only_a_better_model_is_promoted(tmp_path):
    metric = "stsb_test_spearman"
    promote_if_better(tmp_path, _model(tmp_path, "a"), {metric: 0.5}, metric)
    worse = promote_if_better(tmp_path, _model(tmp_path, "b"), {metric: 0.4}, metric)
    assert not worse["promoted"] and worse["champion_after"]["model_key"] == "a"
    tie = promote_if_better(tmp_path, _model(tmp_path, "c"), {metric: 0.5}, metric)
    assert not tie["promoted"]
    better = promote_if_better(tmp_path, _model(tmp_path, "d"), {metric: 0.6}, metric)
    assert better["promoted"] and better["champion_before"] == {"model_key": "a", "score": 0.5}
    champion = read_champion(tmp_path)
    assert champion["model_key"] == "d" and champion["previous"]["model_key"] == "a"


def test_the_same_model_is_kept_not_repromoted(tmp_path):
    metric = "banking77_accuracy"
    promote_if_better(tmp_path, _model(tmp_path, "a"), {metric: 0.7}, metric)
    again = promote_if_better(tmp_path, _model(tmp_path, "a"), {metric: 0.7}, metric)
    assert not again["promoted"] and "already the champion" in again["reason"]


def test_unknown_metric_is_refused(tmp_path):
    with pytest.raises(ValueError, match="promote_metric"):
        promote_if_better(tmp_path, _model(tmp_path, "a"), {"x": 1.0}, "y")


SETTINGS_A = {"tasks": ["Banking77Classification"], "limit": 100, "dims": [], "data": {"stsb": "bundled:x"}}
SETTINGS_B = {"tasks": ["Banking77Classification"], "limit": None, "dims": [], "data": {"stsb": "bundled:x"}}


def test_a_challenger_evaluated_differently_is_re_evaluated_the_champions_way(tmp_path):
    metric = "stsb_test_spearman"
    promote_if_better(tmp_path, _model(tmp_path, "a"), {metric: 0.50}, metric, SETTINGS_A)
    asked = []

    def reevaluate(settings):
        asked.append(settings)
        return {metric: 0.49}  # better on its own settings (0.90), worse on the champion's

    decision = promote_if_better(tmp_path, _model(tmp_path, "b"), {metric: 0.90}, metric, SETTINGS_B, reevaluate)
    assert asked == [SETTINGS_A]
    assert not decision["promoted"] and "re-evaluated on the champion's settings" in decision["reason"]
    assert decision["candidate"]["score"] == 0.49 and decision["compared_on"] == SETTINGS_A

    better = promote_if_better(
        tmp_path, _model(tmp_path, "c"), {metric: 0.1}, metric, SETTINGS_B, lambda s: {metric: 0.6}
    )
    assert better["promoted"]
    champion = read_champion(tmp_path)
    assert champion["evaluation"] == SETTINGS_A and champion["score"] == 0.6  # scores of the settings compared on


def test_a_challenger_that_cannot_be_evaluated_the_same_way_is_never_compared(tmp_path):
    from tasks.promotion import CannotCompare

    metric = "stsb_test_spearman"
    promote_if_better(tmp_path, _model(tmp_path, "a"), {metric: 0.5}, metric, SETTINGS_A)

    def reevaluate(settings):
        raise CannotCompare("the champion's STS-B data had another fingerprint")

    decision = promote_if_better(tmp_path, _model(tmp_path, "b"), {metric: 0.9}, metric, SETTINGS_B, reevaluate)
    assert not decision["promoted"] and decision["reason"].startswith("not compared: the champion's STS-B data")
    no_way = promote_if_better(tmp_path, _model(tmp_path, "c"), {metric: 0.9}, metric, SETTINGS_B)
    assert not no_way["promoted"] and "evaluated differently" in no_way["reason"]
    assert read_champion(tmp_path)["model_key"] == "a"


def test_a_champion_without_evaluation_settings_or_the_metric_is_not_compared(tmp_path):
    import json

    from tasks.store.champion import champion_file

    promote_if_better(tmp_path, _model(tmp_path, "a"), {"m": 0.5, "n": 0.5}, "m", SETTINGS_A)
    other_metric = promote_if_better(tmp_path, _model(tmp_path, "b"), {"m": 0.1, "n": 0.9}, "n", SETTINGS_A)
    assert other_metric["promoted"]  # the champion's record holds its "n" score too: 0.9 > 0.5
    missing = promote_if_better(tmp_path, _model(tmp_path, "c"), {"m": 0.1, "z": 0.9}, "z", SETTINGS_A)
    assert not missing["promoted"] and "no 'z' score" in missing["reason"]
    record = json.loads(champion_file(tmp_path, "champion").read_text())
    record.pop("evaluation")  # as written by an older version (before records had evaluation settings or a checksum)
    record.pop("sha256")
    champion_file(tmp_path, "champion").write_text(json.dumps(record))
    legacy = promote_if_better(tmp_path, _model(tmp_path, "d"), {"n": 0.99}, "n", SETTINGS_A)
    assert not legacy["promoted"] and "no evaluation settings" in legacy["reason"]


# A real gain: min_gain, and for STS-B a paired bootstrap interval above 0 --------------------------------

METRIC = "stsb_test_spearman"


def _pairs_file(path, gold, cosine) -> str:
    """A per-pair file as evaluate_model writes it (one split here: test)."""
    import pandas as pd

    frame = pd.DataFrame({"split": "test", "pair": range(len(gold)), "gold": gold, "cosine": cosine})
    frame.to_parquet(path, index=False)
    return str(path)


def _spearman(path) -> float:
    import pandas as pd
    from scipy.stats import spearmanr

    frame = pd.read_parquet(path)
    return float(spearmanr(frame["gold"], frame["cosine"]).statistic)


@pytest.fixture()
def similarities(tmp_path) -> dict[str, str]:
    """Per-pair files on 400 pairs: a champion, a challenger that differs from it by noise only (better by
    chance, seed 1: +0.0097) and one that is clearly better."""
    import numpy as np

    rng = np.random.default_rng(1)
    gold = rng.uniform(0, 1, 400)
    shared = gold + rng.normal(0, 0.3, 400)  # what both near-equal models see
    return {
        "champion": _pairs_file(tmp_path / "champion.parquet", gold, shared + rng.normal(0, 0.05, 400)),
        "chance": _pairs_file(tmp_path / "chance.parquet", gold, shared + rng.normal(0, 0.05, 400)),
        "clear": _pairs_file(tmp_path / "clear.parquet", gold, gold + rng.normal(0, 0.1, 400)),
    }


def _seed_champion(tmp_path, pairs: str | None, score: float = 0.5, evaluation: dict | None = None) -> None:
    first = promote_if_better(tmp_path, _model(tmp_path, "a"), {METRIC: score}, METRIC, evaluation, pairs=pairs)
    assert first["promoted"] and first["rule"] == "no champion"


def test_a_gain_below_min_gain_is_kept(tmp_path):
    from tasks.promotion import MIN_GAIN

    _seed_champion(tmp_path, None)
    small = promote_if_better(tmp_path, _model(tmp_path, "b"), {METRIC: 0.5 + MIN_GAIN / 2}, METRIC)
    assert not small["promoted"] and small["rule"] == "min_gain" and "below min_gain" in small["reason"]
    assert small["gain"] == pytest.approx(MIN_GAIN / 2) and small["min_gain"] == MIN_GAIN
    assert small["interval"] is None
    strict = promote_if_better(tmp_path, _model(tmp_path, "c"), {METRIC: 0.54}, METRIC, min_gain=0.05)
    assert not strict["promoted"] and strict["rule"] == "min_gain"
    assert read_champion(tmp_path)["model_key"] == "a"
    with pytest.raises(ValueError, match="min_gain"):
        promote_if_better(tmp_path, _model(tmp_path, "d"), {METRIC: 0.9}, METRIC, min_gain=-0.1)


def test_a_gain_by_chance_is_kept_by_the_bootstrap(tmp_path, similarities):
    from tasks.promotion import MIN_GAIN

    _seed_champion(tmp_path, similarities["champion"], _spearman(similarities["champion"]))
    score = _spearman(similarities["chance"])
    decision = promote_if_better(tmp_path, _model(tmp_path, "b"), {METRIC: score}, METRIC, pairs=similarities["chance"])
    assert decision["gain"] >= MIN_GAIN  # the point: min_gain alone would have promoted it
    interval = decision["interval"]
    assert interval["low"] < 0 < interval["high"] and interval["resamples"] == 1000
    assert not decision["promoted"] and decision["rule"] == "bootstrap" and "reaches 0" in decision["reason"]
    assert read_champion(tmp_path)["model_key"] == "a"


def test_a_clear_gain_is_promoted_with_its_interval_above_zero(tmp_path, similarities):
    _seed_champion(tmp_path, similarities["champion"], _spearman(similarities["champion"]))
    score = _spearman(similarities["clear"])
    decision = promote_if_better(tmp_path, _model(tmp_path, "b"), {METRIC: score}, METRIC, pairs=similarities["clear"])
    assert decision["promoted"] and decision["rule"] == "bootstrap"
    assert 0 < decision["interval"]["low"] <= decision["gain"] <= decision["interval"]["high"]
    record = read_champion(tmp_path)
    assert record["model_key"] == "b" and record["pairs"] != similarities["clear"]  # a copy beside the record
    assert _spearman(record["pairs"]) == score


def test_the_bootstrap_is_deterministic_and_resamples_spearman_as_scipy_does(similarities):
    import numpy as np
    from scipy.stats import rankdata, spearmanr

    from tasks.evaluation.bootstrap import _row_spearman, bootstrap_gain

    once = bootstrap_gain(similarities["chance"], similarities["champion"], METRIC)
    assert bootstrap_gain(similarities["chance"], similarities["champion"], METRIC) == once
    rng = np.random.default_rng(5)
    values, gold = rng.normal(size=(3, 50)), rng.integers(0, 5, size=(3, 50)).astype(float)  # gold with ties
    expected = [spearmanr(gold[i], values[i]).statistic for i in range(3)]
    assert _row_spearman(rankdata(gold, axis=1), values) == pytest.approx(expected)


def _hand_written_interval(
    gold, challenger, champion, resamples: int = 1000, seed: int = 0, paired: bool = True
) -> tuple[float, float]:
    """The reference: the paired bootstrap as bootstrap.py hand-wrote it before scipy.stats.bootstrap did it
    (``paired=False``: the champion on pairs drawn apart from the challenger's, the mistake to tell apart)."""
    import numpy as np
    from scipy.stats import rankdata

    from tasks.evaluation.bootstrap import _row_spearman

    rng = np.random.default_rng(seed)
    gains = np.empty(resamples)
    for start in range(0, resamples, 250):
        rows = rng.integers(0, len(gold), size=(min(250, resamples - start), len(gold)))
        theirs = rows if paired else rng.integers(0, len(gold), size=rows.shape)
        gains[start : start + len(rows)] = _row_spearman(
            rankdata(gold[rows], axis=1), challenger[rows]
        ) - _row_spearman(rankdata(gold[theirs], axis=1), champion[theirs])
    low, high = np.nanpercentile(gains, [2.5, 97.5])
    return float(low), float(high)


# Two bootstrap intervals of the same data differ by resampling alone: on this data (1,500 pairs, two near-equal
# models), 30 seeds give endpoints with sd 0.00043 (the gain's interval is 0.022 wide), so two independent
# streams differ by sd 0.0006. 0.005 is 8 of those, and under a quarter of the interval's width; a bootstrap
# that resamples the two models' pairs independently (unpaired) misses by 0.025 (/work/scratch/tolerance.py).
STREAM_TOLERANCE = 0.005


def test_scipys_paired_bootstrap_agrees_with_the_hand_written_one(similarities):
    import numpy as np

    from tasks.evaluation.bootstrap import bootstrap_gain, gain_interval, paired_similarities

    rng = np.random.default_rng(7)
    gold = rng.uniform(0, 5, 1500)
    shared = gold + rng.normal(0, 1.5, 1500)
    champion, challenger = shared + rng.normal(0, 0.4, 1500), shared + rng.normal(0, 0.4, 1500) + 0.05 * gold
    scipys = gain_interval(gold, challenger, champion)
    assert (scipys.resamples, scipys.seed) == (1000, 0) and scipys.high - scipys.low > 3 * STREAM_TOLERANCE
    for seed in (0, 1, 2):  # seed 0: today scipy draws the same indices; 1, 2: other streams altogether
        low, high = _hand_written_interval(gold, challenger, champion, seed=seed)
        assert scipys.low == pytest.approx(low, abs=STREAM_TOLERANCE), seed
        assert scipys.high == pytest.approx(high, abs=STREAM_TOLERANCE), seed
    low, high = _hand_written_interval(gold, challenger, champion, paired=False)  # the tolerance can tell it
    assert abs(low - scipys.low) > 2 * STREAM_TOLERANCE and abs(high - scipys.high) > 2 * STREAM_TOLERANCE

    # the fixture's decisions (kept by chance, promoted when clear) are the hand-written bootstrap's too
    for name, promoted in (("chance", False), ("clear", True)):
        interval = bootstrap_gain(similarities[name], similarities["champion"], METRIC)
        low, high = _hand_written_interval(*paired_similarities(similarities[name], similarities["champion"], METRIC))
        assert (interval.low > 0, low > 0) == (promoted, promoted), name
        assert interval.low == pytest.approx(low, abs=STREAM_TOLERANCE)
        assert interval.high == pytest.approx(high, abs=STREAM_TOLERANCE)


def test_without_both_per_pair_files_min_gain_decides_and_says_so(tmp_path, similarities):
    _seed_champion(tmp_path, None)
    no_champion_pairs = promote_if_better(
        tmp_path, _model(tmp_path, "b"), {METRIC: 0.6}, METRIC, pairs=similarities["clear"]
    )
    assert no_champion_pairs["promoted"] and no_champion_pairs["rule"] == "min_gain"
    assert "no bootstrap: the champion has no per-pair file" in no_champion_pairs["reason"]
    other_pairs = _pairs_file(tmp_path / "other.parquet", [0.1, 0.5, 0.9, 0.3], [0.2, 0.4, 0.8, 0.1])
    mismatch = promote_if_better(tmp_path, _model(tmp_path, "c"), {METRIC: 0.7}, METRIC, pairs=other_pairs)
    assert mismatch["promoted"] and mismatch["rule"] == "min_gain" and mismatch["interval"] is None
    assert "do not hold the same STS-B test pairs" in mismatch["reason"]
    no_challenger_pairs = promote_if_better(tmp_path, _model(tmp_path, "d"), {METRIC: 0.8}, METRIC)
    assert no_challenger_pairs["rule"] == "min_gain" and "the challenger has no" in no_challenger_pairs["reason"]
    banking = {"banking77_accuracy": 0.7}
    promote_if_better(tmp_path, _model(tmp_path, "e"), banking, "banking77_accuracy", slot="banking")
    better = promote_if_better(
        tmp_path, _model(tmp_path, "f"), {"banking77_accuracy": 0.75}, "banking77_accuracy", slot="banking"
    )
    assert better["promoted"] and better["rule"] == "min_gain" and "bootstrap" not in better["reason"]


def test_a_re_evaluation_hands_its_own_per_pair_file_to_the_bootstrap(tmp_path, similarities):
    _seed_champion(tmp_path, similarities["champion"], _spearman(similarities["champion"]), SETTINGS_A)
    score = _spearman(similarities["clear"])

    def reevaluate(settings):
        return {METRIC: score}, similarities["clear"]  # the scores and per-pair file on the champion's settings

    decision = promote_if_better(
        tmp_path, _model(tmp_path, "b"), {METRIC: 0.1}, METRIC, SETTINGS_B, reevaluate, pairs=similarities["chance"]
    )
    assert decision["promoted"] and decision["rule"] == "bootstrap" and decision["interval"]["low"] > 0
    assert read_champion(tmp_path)["evaluation"] == SETTINGS_A


def test_the_lineage_shows_the_rule_gain_min_gain_and_interval(tmp_path, similarities):
    from tasks.report.tables import lineage_markdown

    _seed_champion(tmp_path, similarities["champion"], _spearman(similarities["champion"]))
    score = _spearman(similarities["chance"])
    decision = promote_if_better(tmp_path, _model(tmp_path, "b"), {METRIC: score}, METRIC, pairs=similarities["chance"])
    text = lineage_markdown({}, decision)
    low, high = decision["interval"]["low"], decision["interval"]["high"]
    assert f"rule: bootstrap, gain {decision['gain']:+.4f} (min_gain {MIN_GAIN})" in text
    assert f"[{low:+.4f}, {high:+.4f}] over 1000 resamples" in text
    assert "rule" not in lineage_markdown({}, {k: v for k, v in decision.items() if k not in ("rule", "gain")})


# Two runs finishing together: the better one is champion in either order ---------------------------------

_RACER = """
import contextlib, json, sys, time
from pathlib import Path
from tasks import promotion as champion
from tasks.store.artifacts import ArtifactRef

data_dir, key, score, delay, lock = sys.argv[1], sys.argv[2], float(sys.argv[3]), float(sys.argv[4]), sys.argv[5]
if lock == "off":  # what promotion did before the lock
    champion.champion_lock = lambda *args: contextlib.nullcontext()

def reevaluate(settings):
    time.sleep(1.0)  # a re-evaluation takes a while: the other run finishes meanwhile
    return {"stsb_test_spearman": score}

Path(data_dir, f"ready-{key}").touch()
while not Path(data_dir, "go").exists():
    time.sleep(0.01)
time.sleep(delay)
model = ArtifactRef("models", key, str(Path(data_dir, "artifacts", "models", key)))
settings = json.loads(sys.argv[6])
print(json.dumps(champion.promote_if_better(data_dir, model, {"stsb_test_spearman": score},
                                            "stsb_test_spearman", settings, reevaluate)))
"""


def _race(data_dir, first: tuple[str, float], second: tuple[str, float], lock: str = "on") -> dict[str, dict]:
    """Two processes promoting at once, the second starting 0.3 s after the first; their decisions by key."""
    import json
    import subprocess
    import sys
    import time
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent
    _seed_champion(data_dir, None, 0.5, SETTINGS_A)  # evaluated otherwise than the racers: both re-evaluate
    racers = []
    for (key, score), delay in ((first, 0.0), (second, 0.3)):
        args = [sys.executable, "-c", _RACER, str(data_dir), key, str(score), str(delay), lock, json.dumps(SETTINGS_B)]
        racers.append(subprocess.Popen(args, cwd=root, stdout=subprocess.PIPE, text=True))
    deadline = time.time() + 60
    while not all((data_dir / f"ready-{key}").exists() for key, _ in (first, second)) and time.time() < deadline:
        time.sleep(0.01)
    (data_dir / "go").touch()
    outputs = [racer.communicate(timeout=60)[0] for racer in racers]
    assert [racer.returncode for racer in racers] == [0, 0]
    return {key: json.loads(out) for (key, _), out in zip((first, second), outputs, strict=True)}


@pytest.mark.parametrize("order", [("b60", "b70"), ("b70", "b60")])
def test_two_runs_finishing_together_leave_the_better_model_champion(tmp_path, order):
    scores = {"b60": 0.60, "b70": 0.70}
    decisions = _race(tmp_path, *((key, scores[key]) for key in order))
    assert read_champion(tmp_path)["model_key"] == "b70"
    assert decisions[order[1]]["champion_before"]["model_key"] == order[0]  # it waited for the first to decide


def test_without_the_lock_the_last_writer_wins(tmp_path):
    """What the lock prevents: both runs read the old champion, both promote, the worse one writes last."""
    _race(tmp_path, ("b70", 0.70), ("b60", 0.60), lock="off")
    assert read_champion(tmp_path)["model_key"] == "b60"


def test_a_champion_scored_in_another_precision_is_never_re_evaluated_here(tmp_path):
    """A champion evaluated in bf16 on a GPU: this CPU encodes in fp32, so the challenger cannot be scored
    the champion's way, and the re-evaluator says so instead of comparing fp32 with bf16."""
    from tasks import promotion
    from tasks.evaluation.settings import EvalSettings

    record = EvalSettings(tasks=()).record() | {"precision": "bf16"}
    never = promotion.reevaluation(lambda settings: pytest.fail("evaluated in another precision"))
    with pytest.raises(promotion.CannotCompare, match="evaluated in bf16, which this machine encodes in fp32"):
        never(record)


# A damaged record is never guessed ----------------------------------------------------------------------


def _stored_model(tmp_path, key: str) -> ArtifactRef:
    """A model artifact on disk, old enough for gc, that only the champion keeps."""
    import hashlib
    import json
    import os

    model = _model(tmp_path, key)
    (model.folder / "model").mkdir(parents=True)
    weights = model.folder / "model" / "model.safetensors"
    weights.write_bytes(b"w" * 64)
    files = {"model/model.safetensors": {"bytes": 64, "sha256": hashlib.sha256(b"w" * 64).hexdigest()}}
    manifest = {"stage": "models", "key": key, "params": {}, "parents": [], "files": files}
    (model.folder / "manifest.json").write_text(json.dumps(manifest))
    for path in (weights, weights.parent, model.folder / "manifest.json", model.folder):
        os.utime(path, (1e9, 1e9))
    return model


def _two_champions(tmp_path):
    """Two promotions: the record of b, with a's kept as the previous record."""
    promote_if_better(tmp_path, _stored_model(tmp_path, "a"), {METRIC: 0.5}, METRIC)
    promote_if_better(tmp_path, _stored_model(tmp_path, "b"), {METRIC: 0.6}, METRIC)
    from tasks.store.champion import champion_file

    return champion_file(tmp_path, "champion")


@pytest.mark.parametrize(
    "damage, why",
    [
        (lambda text: text[: len(text) // 2], "not JSON"),  # cut in half: it used to mean "no champion"
        (lambda text: "{}", "lacks"),  # it used to raise KeyError after training and evaluation
        (lambda text: "[]", "not a JSON object"),
        (lambda text: text.replace('"score": 0.6', '"score": 0.9', 1), "checksum does not match"),
    ],
)
def test_a_damaged_record_stops_promotion_and_gc_and_can_be_restored(tmp_path, capsys, damage, why):
    from flows import cli
    from tasks.store.champion import ChampionDamaged

    path = _two_champions(tmp_path)
    path.write_text(damage(path.read_text()))
    with pytest.raises(ChampionDamaged, match=why) as raised:
        promote_if_better(tmp_path, _model(tmp_path, "c"), {METRIC: 0.1}, METRIC)  # would be promoted over "none"
    assert str(path) in str(raised.value) and "--restore" in str(raised.value)
    assert cli.main(["gc", "--data-dir", str(tmp_path), "--keep-runs", "0", "--min-age-hours", "0"]) == 2
    assert "refused" in capsys.readouterr().err
    assert (tmp_path / "artifacts" / "models" / "b" / "manifest.json").exists()  # gc removed nothing
    assert cli.main(["champion", "--data-dir", str(tmp_path)]) == 2
    assert cli.main(["champion", "--restore", "--data-dir", str(tmp_path)]) == 0
    assert read_champion(tmp_path)["model_key"] == "a"  # the previous record, sound again
    assert promote_if_better(tmp_path, _model(tmp_path, "c"), {METRIC: 0.9}, METRIC)["promoted"]


def test_a_record_from_before_checksums_is_read_and_the_next_one_has_one(tmp_path):
    import json

    from tasks.store.champion import CHECKSUM, champion_file

    path = champion_file(tmp_path, "champion")
    path.parent.mkdir(parents=True)
    old = {"model_key": "old", "model_path": "/m/model", "metric": METRIC, "score": 0.4, "evaluation": {}}
    path.write_text(json.dumps(old))
    assert read_champion(tmp_path)["model_key"] == "old"
    assert promote_if_better(tmp_path, _model(tmp_path, "new"), {METRIC: 0.9}, METRIC)["promoted"]
    record = json.loads(path.read_text())
    assert CHECKSUM in record and record["previous"]["model_key"] == "old" and "previous" not in record["previous"]


def test_restore_without_a_previous_record_says_so(tmp_path, capsys):
    from flows import cli

    promote_if_better(tmp_path, _model(tmp_path, "a"), {METRIC: 0.5}, METRIC)
    assert cli.main(["champion", "--restore", "--data-dir", str(tmp_path)]) == 2
    assert "no previous champion record" in capsys.readouterr().err
    assert cli.main(["champion", "--data-dir", str(tmp_path)]) == 0
    assert '"model_key": "a"' in capsys.readouterr().out
