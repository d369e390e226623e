"""Progress of long work as Prefect progress artifacts, beside the tqdm bars in the logs."""

from __future__ import annotations

from prefect.artifacts import create_progress_artifact, update_progress_artifact
from transformers import TrainerCallback


class StageProgress:
    """A progress artifact for one stage; ``update(fraction)`` with fraction in [0, 1]."""

    def __init__(self, description: str) -> None:
        self.description = description
        self.artifact_id = create_progress_artifact(progress=0.0, description=description)
        self.last = 0.0

    def update(self, fraction: float) -> None:
        percent = round(100 * min(max(fraction, 0.0), 1.0), 1)
        if percent >= self.last + 1 or percent == 100:  # at most ~100 API calls per stage
            update_progress_artifact(self.artifact_id, percent)
            self.last = percent


class TrainingProgress(TrainerCallback):
    """Reports the trainer's step count as a Prefect progress artifact."""

    def __init__(self, description: str) -> None:
        self.description = description
        self.progress: StageProgress | None = None

    def on_train_begin(self, args, state, control, **kwargs):
        self.progress = StageProgress(self.description)

    def on_step_end(self, args, state, control, **kwargs):
        if self.progress and state.max_steps:
            self.progress.update(state.global_step / state.max_steps)
