"""The pipeline's stages as thin Prefect tasks: parent artifacts in, one artifact out.

Only wiring lives here: each stage states what determines its artifact (parameters, parents) and calls
the plain functions of its step that do the work, and shows Prefect what it made. The artifact store is
the cache: a finished artifact with the same key is returned as is (``cached``), a missing or damaged one
is rebuilt. Prefect's own result cache is off (NO_CACHE): it cannot see a deleted file; the store can.
Stage names, versions and file names are the catalog's (``store/catalog.py``); the release path,
shared with the CLI, is ``shipping/release.py``; re-evaluating the champion's way is ``promotion.py``'s.
"""

from tasks.stages.common import unless_off
from tasks.stages.data import (
    candidate_index,
    held_out_sizes,
    hold_out,
    load_pairs,
    map_labels,
    mine_negatives,
    tokenize,
)
from tasks.stages.model import evaluate, evaluate_artifact, model_key_params, promote, train, trained_model
from tasks.stages.shipping import push, release_model, report

__all__ = [
    "candidate_index",
    "evaluate",
    "evaluate_artifact",
    "held_out_sizes",
    "hold_out",
    "load_pairs",
    "map_labels",
    "mine_negatives",
    "model_key_params",
    "promote",
    "push",
    "release_model",
    "report",
    "tokenize",
    "train",
    "trained_model",
    "unless_off",
]
