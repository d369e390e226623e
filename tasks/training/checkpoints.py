"""Checkpoints a killed run resumes from: only whole ones, with the loss's own weights beside the model's.

The Trainer writes the model and optimizer state; SoftmaxLoss's classifier is not part of the model,
so it is saved here, and a seal file written last marks the checkpoint as whole.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from safetensors.torch import load_file, save_file
from transformers import TrainerCallback

from tasks.training.losses import inner_loss

LOSS_HEAD = "loss_head.safetensors"
SEAL = "checkpoint.sealed"


def loss_head(loss) -> dict:
    """The loss's own weights (SoftmaxLoss's classifier), without the model's or the guide's."""
    loss = inner_loss(loss)
    return {k: v.detach().contiguous() for k, v in loss.state_dict().items() if not k.startswith(("model.", "guide."))}


class CheckpointSeal(TrainerCallback):
    """Completes each checkpoint: the loss head, then the seal file, both written by process zero alone once
    every process has written its part (a kill before then leaves an unsealed checkpoint, never trusted)."""

    def __init__(self, loss) -> None:
        self.loss = loss

    def on_save(self, args, state, control, **kwargs):
        import torch.distributed as dist

        if dist.is_available() and dist.is_initialized():
            dist.barrier()
        if not state.is_world_process_zero:
            return
        folder = Path(args.output_dir) / f"checkpoint-{state.global_step}"
        head = loss_head(self.loss)
        if head:
            save_file(head, str(folder / LOSS_HEAD))
        (folder / SEAL).write_text(str(state.global_step))


def last_whole_checkpoint(folder: Path) -> Path | None:
    """The newest sealed checkpoint; unsealed ones (a kill while writing) are removed."""
    if not folder.is_dir():
        return None
    checkpoints = sorted(folder.glob("checkpoint-*"), key=lambda p: int(p.name.split("-")[-1]))
    for partial in [p for p in checkpoints if not (p / SEAL).exists()]:
        shutil.rmtree(partial, ignore_errors=True)
    sealed = [p for p in checkpoints if (p / SEAL).exists()]
    return sealed[-1] if sealed else None


def restore_loss_head(loss, checkpoint: Path | None) -> None:
    """Put the loss head saved with ``checkpoint`` back (the Trainer restores only the model)."""
    if checkpoint is not None and (checkpoint / LOSS_HEAD).exists():
        inner_loss(loss).load_state_dict(load_file(str(checkpoint / LOSS_HEAD)), strict=False)
