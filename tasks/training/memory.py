"""Whether a batch fits in GPU memory, and the cached (GradCache) loss's mini batch when it would not.

The plain loss keeps every text's activations of a batch at once; the cached loss embeds mini batches
without them and trades a second forward pass for memory. "auto" takes it only when the estimate says
a batch would not fit, so a batch that fits trains the plain, faster way.
"""

from __future__ import annotations

import numpy as np

from tasks.training.devices import training_device

CACHED_MINI_BATCH = 32  # the cached loss's mini batch when "auto" finds that a batch would not fit


def activation_bytes(model, tokens_per_step: float) -> float:
    """Rough activation memory of one training step: about 34 bytes per token, layer and hidden unit
    in 16-bit precision (Korthikanti et al., 2022, without the attention matrix that SDPA never stores)."""
    config = model[0].auto_model.config
    layers = getattr(config, "num_hidden_layers", 12)
    hidden = getattr(config, "hidden_size", 768)
    return 34.0 * tokens_per_step * layers * hidden


def mini_batch_for(
    requested: int, ranking: bool, model, row_lengths: list[np.ndarray], batch_size: int, free: float | None = None
) -> int:
    """The cached loss's mini batch (0: the plain loss): as asked, or with "auto" (-1) only when a batch of
    ``batch_size`` rows (``row_lengths``: tokens per row of each column) would not fit in ``free`` bytes, by
    default the free memory of this process's own GPU (not GPU 0)."""
    import torch

    if requested >= 0 or not ranking:
        return max(0, requested)
    if not torch.cuda.is_available():
        return 0
    per_row = sum(float(np.percentile(lengths, 99)) for lengths in row_lengths)
    weights = 16.0 * sum(p.numel() for p in model.parameters())  # weights, gradients, two Adam moments
    free = torch.cuda.mem_get_info(torch.device(training_device()))[0] if free is None else free
    needed = activation_bytes(model, per_row * batch_size) + weights
    return 0 if needed < 0.7 * free else CACHED_MINI_BATCH
