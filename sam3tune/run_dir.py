"""A training run's folder: the name of everything in it, and its config read back as a ``TrainConfig``.

``RUN_DIR/``
  ``config.yaml``  the resolved :class:`~sam3tune.train.config.TrainConfig` (``--config`` reads it back)
  ``metrics.jsonl``  train and validation records (``train.metrics_log``); ``tb/``  the same in TensorBoard
  ``checkpoints/last``, ``checkpoints/best``  (``train.checkpoint``)
  ``loss_curve.png``
  ``model/``  the best weights as a plain transformers model (``eval`` / ``predict --model``)
  ``adapters/``  the LoRA adapters of a LoRA run
  ``.lock``  held by the process training there (``train.run_lock``); ``resumes.jsonl`` one line per resume

Every module that reads or writes a run folder (train, resume, eval, export, the model card) goes
through :class:`RunDir`; no other module spells these names.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from sam3tune.config import load_config
from sam3tune.errors import UserError

if TYPE_CHECKING:
    from sam3tune.train.config import TrainConfig


@dataclass(frozen=True)
class RunDir:
    """The folder ``path`` of a training run (see the module docstring)."""

    path: Path

    def __post_init__(self) -> None:
        object.__setattr__(self, "path", Path(self.path))

    @property
    def config_file(self) -> Path:
        return self.path / "config.yaml"

    @property
    def metrics_file(self) -> Path:
        return self.path / "metrics.jsonl"

    @property
    def tensorboard_dir(self) -> Path:
        return self.path / "tb"

    @property
    def checkpoints_dir(self) -> Path:
        return self.path / "checkpoints"

    def checkpoint(self, name: Literal["last", "best"]) -> Path:
        """The folder of checkpoint ``name``."""
        return self.checkpoints_dir / name

    @property
    def loss_curve(self) -> Path:
        return self.path / "loss_curve.png"

    @property
    def model_dir(self) -> Path:
        return self.path / "model"

    @property
    def adapters_dir(self) -> Path:
        return self.path / "adapters"

    @property
    def lock_file(self) -> Path:
        return self.path / ".lock"

    @property
    def resumes_file(self) -> Path:
        return self.path / "resumes.jsonl"

    def is_run(self) -> bool:
        """Whether the folder holds a run (its ``config.yaml``); False for a path that cannot be looked at."""
        return os.path.isfile(self.config_file)

    def config(self, overrides: Sequence[str] = ()) -> TrainConfig:
        """The run's ``config.yaml`` as a :class:`~sam3tune.train.config.TrainConfig` (read like any config:
        YAML 1.2, unknown keys, wrong types and repeated keys refused naming the file), with ``overrides``
        applied. A folder without one raises :class:`~sam3tune.errors.UserError`."""
        from sam3tune.train.config import TrainConfig  # train imports this module: import it when used

        if not self.is_run():
            raise UserError(
                f"{self.path} is not a sam3tune run directory (no {self.config_file.name})", path=self.path
            )
        return load_config(TrainConfig, self.config_file, overrides)

    @classmethod
    def of_model(cls, model: str | Path) -> RunDir | None:
        """The run whose exported model folder (``RUN_DIR/model``) is ``model``, or None."""
        path = Path(model)
        run = cls(path.parent)
        return run if path.name == run.model_dir.name and run.is_run() else None
