"""The training recipe: configuration, optimiser groups and schedule, loop, checkpoints, resume,
distributed training."""

from sam3tune.train.config import (
    LoopConfig,
    OptimConfig,
    ScheduleConfig,
    TrainConfig,
    ValidationConfig,
)
from sam3tune.train.loop import RunResult, Trainer, TrainingDivergedError, TrainingParts

__all__ = [
    "LoopConfig",
    "OptimConfig",
    "RunResult",
    "ScheduleConfig",
    "TrainConfig",
    "Trainer",
    "TrainingDivergedError",
    "TrainingParts",
    "ValidationConfig",
]
