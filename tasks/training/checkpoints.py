"""Checkpoints a killed run resumes from: only whole ones, with the loss's own weights beside the model's.

The Trainer writes the model and optimizer state; SoftmaxLoss's classifier is not part of the model,
so it is saved here, and a seal file written last marks the checkpoint as whole. The seal lists every
file's size and sha256, checked before resuming: a flipped block in sealed weights once trained on and
promoted a model with word-embedding values of 28,664. A checkpoint that does not match its seal (or whose
seal, written before checksums, lists none) is removed with a warning naming the files, and the run
resumes from the previous whole one; the trainer keeps one (``save_total_limit=1``), so in practice it
starts afresh, which costs the steps since the start and never trusts a byte it cannot check.
"""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

from safetensors.torch import load_file, save_file
from transformers import TrainerCallback

from tasks.store.artifacts import atomic_write_text
from tasks.store.manifests import damaged_files as manifest_damaged_files
from tasks.store.manifests import file_entries
from tasks.training.losses import inner_loss

log = logging.getLogger(__name__)

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
        write_seal(folder, state.global_step)


def write_seal(folder: Path, step: int) -> None:
    """The seal, atomically: the step and every file's size and sha256 (a half-written seal is no seal)."""
    files = {rel: info for rel, info in file_entries(folder).items() if rel != SEAL}
    atomic_write_text(folder / SEAL, json.dumps({"step": step, "files": files}, indent=1))


def damaged_files(checkpoint: Path) -> list[str]:
    """Files that are missing or differ from the seal; the seal itself when it lists no checksums (a seal
    from before checksums holds only the step) or is not whole."""
    try:
        files = json.loads((checkpoint / SEAL).read_text())["files"]
    except (OSError, ValueError, TypeError, KeyError):
        return [SEAL]
    if not isinstance(files, dict) or not files:
        return [SEAL]
    return manifest_damaged_files(checkpoint, files)


def last_whole_checkpoint(folder: Path) -> Path | None:
    """The newest sealed checkpoint whose files match its seal. Unsealed ones (a kill while writing) are
    removed, and so are damaged ones, with a warning naming their files: training from them would go on
    from bytes nobody wrote; resuming from an older one, or afresh, only repeats steps."""
    if not folder.is_dir():
        return None
    checkpoints = sorted(folder.glob("checkpoint-*"), key=lambda p: int(p.name.split("-")[-1]))
    for partial in [p for p in checkpoints if not (p / SEAL).exists()]:
        shutil.rmtree(partial, ignore_errors=True)
    for checkpoint in reversed([p for p in checkpoints if (p / SEAL).exists()]):
        damaged = damaged_files(checkpoint)
        if not damaged:
            return checkpoint
        named = ", ".join(str(checkpoint / rel) for rel in damaged)
        log.warning("checkpoint %s does not match its seal (%s): not resuming from it, removed", checkpoint, named)
        shutil.rmtree(checkpoint, ignore_errors=True)
    return None


def restore_loss_head(loss, checkpoint: Path | None) -> None:
    """Put the loss head saved with ``checkpoint`` back (the Trainer restores only the model)."""
    if checkpoint is not None and (checkpoint / LOSS_HEAD).exists():
        inner_loss(loss).load_state_dict(load_file(str(checkpoint / LOSS_HEAD)), strict=False)
