"""The memory ladder for the run's own model and batch: one watched training step per rung
(``sam3tune.train.memory_ladder``), weights + gradients + optimizer state counted and the activation peak
measured by the doctor's meter, as for the run's own step (``doctor --ladder``)."""

from __future__ import annotations

import gc
from dataclasses import dataclass

import torch

from sam3tune.data import Batch
from sam3tune.doctor.memory import MemoryEstimate
from sam3tune.doctor.step_probe import probe_training_step
from sam3tune.loss import Sam3Criterion
from sam3tune.model import build_training_model, load_model
from sam3tune.train.config import TrainConfig
from sam3tune.train.memory_ladder import LADDER, RungConflict, rung_config
from sam3tune.train.param_groups import build_optimizer, role_of


@dataclass(frozen=True)
class RungMemory:
    """One rung on the run's model and first batch: trained parameters and the step's memory, or why it
    could not be measured (``error``: bitsandbytes missing, out of memory on this device, ...)."""

    rung: str
    trainable: int | None
    memory: MemoryEstimate | None
    error: str | None = None


def ladder_memory(config: TrainConfig, batch: Batch, device: torch.device) -> list[RungMemory]:
    """Each rung of the ladder applied to ``config``, its model loaded fresh and one step taken on
    ``batch`` on ``device`` (bf16 autocast unless ``loop.amp=off``, as the doctor plans for a GPU)."""
    bf16 = config.loop.amp != "off"
    rows = []
    for rung in LADDER:
        model = None
        try:
            rung_run = rung_config(config, rung)  # the user's own settings kept, as training keeps them
            bundle = load_model(
                rung_run.model.name,
                allow_missing_weights=rung_run.model.allow_missing_weights,
                seed=rung_run.loop.seed,
            )
            model = build_training_model(
                bundle, rung_run.model, exemplars=rung_run.data.exemplars.enabled, bf16_autocast=bf16
            ).to(device)
            trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
            probe = probe_training_step(
                model,
                Sam3Criterion(rung_run.loss),
                batch,
                build_optimizer(model, role_of, model.num_vit_blocks, rung_run.optim),
                bf16=bf16,
                max_grad_norm=rung_run.optim.grad_clip_norm,
            )
            rows.append(RungMemory(rung, trainable, probe.memory))
        except (ImportError, RungConflict) as err:
            rows.append(RungMemory(rung, None, None, str(err)))
        except torch.cuda.OutOfMemoryError:
            rows.append(RungMemory(rung, None, None, f"out of memory on {device}"))
        finally:
            del model
            gc.collect()
            if device.type == "cuda":
                torch.cuda.empty_cache()
    return rows
