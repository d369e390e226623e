"""The release card's Hub metadata, read back offline with huggingface_hub as the Hub reads it: base model,
datasets, license, language, name and a model-index of the run's own scores; and a body with text rows and the
sentence-transformers loss trained, where sentence-transformers saw only token ids and our chunking wrapper."""

from __future__ import annotations

import html
import re
from pathlib import Path

import pytest
from huggingface_hub import ModelCard

from tasks.evaluation.data import banking77_splits
from tasks.models.resolve import BUNDLED_MINILM, bundled_minilm_dir
from tasks.negatives.strategies import MiningConfig, soft_negatives
from tasks.pairs.labels import pairs_for_loss
from tasks.shipping import card
from tasks.store.runs import RunRecord

HUB_DATA = "nyu-mll/multi_nli"
REVISION = "a" * 40
SCORES = {
    "stsb_validation_spearman": {"base": 0.8601, "trained": 0.8712},
    "stsb_test_spearman": {"base": 0.8203, "trained": 0.8311},
    "stsb_test_spearman_dim16": {"base": 0.70, "trained": 0.75},
    "banking77_accuracy": {"base": 0.8010, "trained": 0.8123},
}
TOKEN_IDS = re.compile(r"\[\d+, \d+, \d+")  # how sentence-transformers shows a row of ids: [101, 1996, ...]


@pytest.fixture(scope="module")
def trained(tmp_path_factory, tiny_bert, nli_sample) -> dict[str, Path]:
    """A tiny BERT trained as the flow trains (token ids, unpadded chunks, MatryoshkaLoss): its folder holds the
    README sentence-transformers wrote, and the triplets the ids were made from beside it."""
    from tasks.evaluation.data import stsb_pairs
    from tasks.training.recipe import recipe_and_runtime
    from tasks.training.trainer import train_model

    root = tmp_path_factory.mktemp("card")
    triplets = soft_negatives(pairs_for_loss(nli_sample, "mnr"), nli_sample, MiningConfig())
    (root / "triplets").mkdir()
    triplets.to_parquet(root / "triplets" / "triplets.parquet")
    config = recipe_and_runtime(loss="mnr", batch_size=8, warmup_steps=1, max_steps=2, matryoshka_dims=(32, 16))
    train_model(str(tiny_bert), triplets, stsb_pairs("validation", 16), *config, root / "run")
    return {"model": root / "run" / "model", "triplets": root / "triplets"}


def _record(trained: dict[str, Path], **facts) -> RunRecord:
    """A run record as the flow writes it: a hub source, the bundled MiniLM as base, a capped evaluation."""
    return RunRecord.from_dict(
        {
            "source": f"{HUB_DATA}@{REVISION}",
            "source_identity": {
                "kind": "hub",
                "repo": HUB_DATA,
                "config": None,
                "split": "train",
                "revision": REVISION,
            },
            "train_recipe": {"loss": "mnr", "epochs": 1, "matryoshka_dims": [32, 16]},
            "mining": {"strategy": "soft"},
            "base_model": {"name": "all-MiniLM-L6-v2", "source": "bundled", "location": str(bundled_minilm_dir())},
            "metrics": SCORES,
            "evaluation": {"tasks": ["Banking77Classification"], "limit": 200, "dims": [16], "precision": "fp32"},
            "champion": {"promoted": False, "reason": "kept: not better", "metric": "stsb_test_spearman"},
            "training": {"loss_class": "MultipleNegativesRankingLoss in MatryoshkaLoss", "rows": 93, "steps": 2},
            "artifacts": {
                "model": {"stage": "models", "key": "abc", "path": "/data/artifacts/models/abc"},
                "triplets": {"stage": "triplets", "key": "t1", "path": str(trained["triplets"])},
            },
            "environment": {"python": "3.11"},
        }
        | facts
    )


def _release(model: Path, lineage: dict, out: Path) -> tuple[ModelCard, str]:
    out.mkdir(parents=True, exist_ok=True)
    card.write_card(model, out, lineage, ["onnx"])
    text = (out / card.CARD).read_text()
    return ModelCard.load(out / card.CARD), text  # strict: a model-index the Hub could not read fails here


def test_the_front_matter_holds_the_hubs_metadata_and_our_scores(trained, tmp_path):
    parsed, text = _release(trained["model"], card.lineage_from_run(_record(trained)), tmp_path / "release")
    data = parsed.data
    assert data.base_model == BUNDLED_MINILM and data.get("base_model_relation") == "finetune"
    assert data.datasets == [HUB_DATA]
    base_card = ModelCard.load(bundled_minilm_dir() / card.CARD).data  # the bundled base model's own card
    assert data.license == base_card.license == "apache-2.0"
    assert data.language == ["en"] and base_card.language == "en"
    assert data.model_name == "all-MiniLM-L6-v2 fine-tuned on nyu-mll/multi_nli"
    assert data.library_name == "sentence-transformers" and data.pipeline_tag == "sentence-similarity"
    assert "loss:MatryoshkaLoss" in data.tags and "loss:MultipleNegativesRankingLoss" in data.tags
    assert not [tag for tag in data.tags if "GroupedForwardLoss" in tag]

    found = {(r.dataset_type, r.dataset_split, r.metric_type): r.metric_value for r in data.eval_results}
    assert found == {  # the trained scores, at full dimension; the trainer's "sts dev" figure is gone
        ("mteb/stsbenchmark-sts", "validation", "cosine_spearman"): 0.8712,
        ("mteb/stsbenchmark-sts", "test", "cosine_spearman"): 0.8311,
        ("mteb/banking77", "test", "accuracy"): 0.8123,
    }
    named = {(r.dataset_name, r.task_type, r.dataset_config) for r in data.eval_results}
    assert named == {
        ("MTEB STSBenchmark", "STS", "default"),
        ("MTEB Banking77Classification", "Classification", "default"),
    }
    assert sorted(data.metrics) == ["accuracy", "cosine_spearman"]
    sizes = {(r.dataset_type, r.dataset_split): r.dataset_args for r in data.eval_results}
    banking = len(banking77_splits(200)["test"])
    assert sizes == {
        ("mteb/stsbenchmark-sts", "validation"): {"eval_limit": 200, "rows": 200, "split_rows": 1500},
        ("mteb/stsbenchmark-sts", "test"): {"eval_limit": 200, "rows": 200, "split_rows": 1379},
        ("mteb/banking77", "test"): {"eval_limit": 200, "rows": banking, "split_rows": len(banking77_splits()["test"])},
    }
    assert "capped by `eval_limit` = 200" in text and "MTEB STSBenchmark validation: 200 of 1,500" in text
    assert f"MTEB Banking77Classification test: {banking:,} of 3,080" in text


def test_the_card_shows_text_rows_and_the_loss_trained_never_ids_or_our_classes(trained, tmp_path):
    own = (trained["model"] / card.CARD).read_text()  # what sentence-transformers wrote while training on ids
    assert "GroupedForwardLoss" in own and TOKEN_IDS.search(own)
    _, text = _release(trained["model"], card.lineage_from_run(_record(trained)), tmp_path / "release")
    assert "GroupedForwardLoss" not in text and "tasks.training" not in text and not TOKEN_IDS.search(text)
    assert text.count("### Training Dataset") == 1
    section = text.split("### Training Dataset")[1].split("### Training Hyperparameters")[0]
    import pandas as pd

    first = pd.read_parquet(trained["triplets"] / "triplets.parquet").iloc[0]
    for column in ("anchor", "positive", "negative"):
        assert f"<code>{html.escape(first[column][: card.SHOWN_CHARS], quote=False)}</code>" in section
    assert f"[{HUB_DATA}](https://huggingface.co/datasets/{HUB_DATA}) at revision `{REVISION}`" in section
    assert "* Size: 93 training samples" in section
    assert (
        "[<code>MatryoshkaLoss</code>]" in section and "wrapping [<code>MultipleNegativesRankingLoss</code>]" in section
    )
    assert "at dimensions 32, 16" in section
    assert text.split("\n---\n", 1)[1].lstrip().startswith("# all-MiniLM-L6-v2 fine-tuned on nyu-mll/multi_nli")
    assert f"finetuned from [{BUNDLED_MINILM}](https://huggingface.co/{BUNDLED_MINILM})" in text
    assert "- **License:** apache-2.0" in text and "- **Language:** en" in text
    assert "`max_steps`: 2" in text and "### Training Logs" in text  # what only the trainer knew stays
    assert 'load_export(path, "onnx")' in text and card.SECTION in text


def test_a_local_base_and_local_data_state_only_what_is_known(trained, tiny_bert, tmp_path):
    local = {
        "source": "data/samples/mnli/train.parquet",
        "source_identity": {"kind": "local", "file": "train.parquet", "sha256": "f00d"},
        "base_model": {"name": "tiny", "source": "local", "location": str(tiny_bert)},
        "evaluation": {"tasks": ["Banking77Classification"], "limit": None},
    }
    record = _record(trained, **local)
    parsed, text = _release(trained["model"], card.lineage_from_run(record), tmp_path / "local")
    data = parsed.data
    assert data.base_model == "tiny" and data.get("base_model_relation") == "finetune"
    assert data.datasets is None  # a local file is no Hub dataset
    assert data.license is None  # neither passed nor in the tiny base's card
    assert data.language == ["en"]  # the bundled (English) NLI sample
    assert data.model_name == "tiny fine-tuned on mnli/train.parquet"
    assert all(r.dataset_args is None for r in data.eval_results) and "on the whole splits" in text
    assert "finetuned from `tiny`" in text and "](https://huggingface.co/tiny)" not in text

    passed = card.lineage_from_run(record, license="mit", language="de", model_name="org/tiny-nli")
    data = _release(trained["model"], passed, tmp_path / "passed")[0].data
    assert (data.license, data.language, data.model_name) == ("mit", ["de"], "org/tiny-nli")
    from_run = _record(trained, **local, parameters={"license": "cc-by-4.0", "language": "fr"})
    data = _release(trained["model"], card.lineage_from_run(from_run), tmp_path / "from-run")[0].data
    assert (data.license, data.language) == ("cc-by-4.0", ["fr"])


def test_a_local_folder_in_the_hubs_layout_is_no_hub_dataset(trained):
    identity = {"kind": "hub", "repo": "/data/nli-folder", "config": None, "revision": "sha256:0123"}
    lineage = card.lineage_from_run(_record(trained, source_identity=identity))
    assert lineage["card"]["datasets"] == [] and "id" not in lineage["card"]["training_data"]


def test_a_folder_without_a_run_keeps_its_own_cards_metadata(tmp_path):
    parsed, text = _release(bundled_minilm_dir(), card.lineage_from_run(None), tmp_path / "minilm")
    assert parsed.data.license == "apache-2.0" and parsed.data.language == "en"
    assert parsed.data.base_model is None and card.SECTION in text
