"""The losses: sentence-transformers' own, built for the recipe, and the wrapper that runs the model over
the collator's length-grouped chunks before handing the loss its embeddings.

Under several processes the in-batch losses (MNR, GIST and their cached forms) gather embeddings
across devices, so their negatives span the global batch as on one device.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from tasks.models.precision import Precision
from tasks.pairs.labels import NLI_LABELS
from tasks.training.batches import ChunkedBatch


def load_guide(location: str | None, model, precision: Precision):
    """GISTEmbedLoss's guide: frozen, in evaluation mode, on the training model's device, its weights in the
    precision training runs as (``runs_as``: half on a GPU, fp32 on the CPU). When its vocabulary is the
    model's, it reads the model's own ids: its ``max_seq_length`` is raised to the model's (within its
    position embeddings), otherwise the loss would tokenise every batch again for it, on the training
    process."""
    from sentence_transformers import SentenceTransformer

    if location is None:
        raise ValueError("loss 'gist' needs a guide model (parameter miner_model)")
    guide = SentenceTransformer(location, device=str(model.device), trust_remote_code=False)
    if precision.dtype is not None:
        guide = guide.to(precision.dtype)
    guide.eval()
    for parameter in guide.parameters():
        parameter.requires_grad_(False)
    same_vocabulary = guide.tokenizer.get_vocab() == model.tokenizer.get_vocab()
    positions = getattr(getattr(guide[0], "auto_model", None), "config", None)
    positions = getattr(positions, "max_position_embeddings", guide.max_seq_length)
    if same_vocabulary and guide.max_seq_length < model.max_seq_length <= positions:
        guide.max_seq_length = model.max_seq_length
    return guide


def build_loss(model, loss: str, mini_batch_size: int = 0, guide=None, gather: bool = False):
    """SoftmaxLoss(3 labels), CosineSimilarityLoss, (Cached)MultipleNegativesRankingLoss or
    (Cached)GISTEmbedLoss, whose ``guide`` model drops in-batch negatives it scores above the positive.
    ``gather``: in-batch negatives from every process (data-parallel training)."""
    from sentence_transformers import losses

    if loss == "gist":
        if guide is None:
            raise ValueError("loss 'gist' needs a guide model")
        if mini_batch_size > 0:
            return losses.CachedGISTEmbedLoss(
                model, guide, mini_batch_size=mini_batch_size, gather_across_devices=gather
            )
        return losses.GISTEmbedLoss(model, guide, gather_across_devices=gather)
    if loss == "mnr" and mini_batch_size > 0:
        return losses.CachedMultipleNegativesRankingLoss(
            model, mini_batch_size=mini_batch_size, gather_across_devices=gather
        )
    if loss == "mnr":
        return losses.MultipleNegativesRankingLoss(model, gather_across_devices=gather)
    if loss == "softmax":
        return losses.SoftmaxLoss(
            model, embedding_dimension=model.get_embedding_dimension(), num_labels=len(NLI_LABELS)
        )
    if loss == "cosine":
        return losses.CosineSimilarityLoss(model)
    raise ValueError(f"unknown loss {loss!r}")


def matryoshka(model, loss, dims: tuple[int, ...]):
    """``loss`` inside sentence-transformers' MatryoshkaLoss: the model runs once per batch, and the loss is
    summed over the embedding truncated to each dimension (ours or the library's chunks alike)."""
    from sentence_transformers import losses

    if not dims:
        return loss
    return losses.MatryoshkaLoss(model, loss, matryoshka_dims=list(dims))


class _Embedded(nn.Module):
    """Stands in for the model inside a loss that cannot take embeddings (SoftmaxLoss): the features it is
    handed already hold them, so the loss's own forward, head and maths run unchanged."""

    def forward(self, features: dict[str, Any]) -> dict[str, Any]:
        return features


class GroupedForwardLoss(nn.Module):
    """Runs the model over a :class:`ChunkedBatch`, restores column order, then applies ``loss``.

    ``loss`` is a sentence-transformers loss; its model, parameters (SoftmaxLoss's classifier) and
    maths are its own, only the embedding step is done here. ``columns``: texts per row (anchor,
    positive, negatives), known when the collator is built, so no step waits on the GPU to learn it.
    """

    def __init__(self, loss: nn.Module, columns: int) -> None:
        super().__init__()
        self.loss = loss
        self.columns = columns

    @property
    def model(self):
        return self.loss.model

    def forward(self, sentence_features: list[dict[str, Any]], labels: torch.Tensor | None) -> torch.Tensor:
        batch = ChunkedBatch.from_features(sentence_features)
        embedded = torch.cat([self.loss.model(chunk)["sentence_embedding"] for chunk in batch.chunks])
        in_order = embedded.index_select(0, batch.restore.to(embedded.device))
        reps = list(in_order.reshape(self.columns, -1, in_order.shape[-1]).unbind(0))
        if hasattr(self.loss, "compute_loss_from_embeddings"):
            return self.loss.compute_loss_from_embeddings(reps, labels)
        model, self.loss.model = self.loss.model, _Embedded()
        try:
            return self.loss([{"sentence_embedding": rep} for rep in reps], labels)
        finally:
            self.loss.model = model


def inner_loss(loss: nn.Module) -> nn.Module:
    """The sentence-transformers loss inside its wrappers (ours, MatryoshkaLoss), or the loss itself."""
    from sentence_transformers.losses import MatryoshkaLoss

    while isinstance(loss, GroupedForwardLoss | MatryoshkaLoss):
        loss = loss.loss
    return loss
