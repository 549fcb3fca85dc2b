"""``SuiteConfig``: a benchmark suite as plain data (YAML + ``key=value`` overrides, like every config).

A suite is a list of datasets, the seeds and shots of the few-shot protocol, and the base training
config every fine-tune starts from. For each dataset the base model is evaluated once on ``test``
(zero-shot); for each (dataset, seed) a run fine-tunes on the K-shot sample of ``train`` drawn with that
seed and its model is evaluated on ``test`` (``docs/suite.md``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from sam3tune.config import ConfigError, require, require_device, require_range
from sam3tune.eval.config import EvalConfig

_NAME = re.compile(r"[\w.-]+")


@dataclass
class SuiteDataset:
    """One dataset of a suite."""

    name: str
    """Its name in the tables and its folder under the suite's output (letters, digits, ``_ . -``)."""
    root: str
    """Anything ``data.root`` takes: a COCO / Roboflow / YOLO folder, a COCO JSON file, ``hf:ORG/NAME``."""
    train: str = "train"
    """The training split (folder name or COCO JSON path); ``{seed}`` and ``{shots}`` are replaced per run,
    so the published pre-sampled files serve (ODinW: ``train/fewshot_train_shot{shots}_seed{seed}.json``
    with ``presampled: true``)."""
    test: str = "test"
    """The split both models are scored on."""
    val: str | None = None
    """A split to validate on while fine-tuning (picks the exported checkpoint); None: no validation, the
    last weights are scored. It may not be ``test``."""
    train_images: str | None = None
    """Image folder of a JSON ``train`` split whose images are not beside it (``data.train_images``)."""
    test_images: str | None = None
    """Image folder of a JSON ``test`` split whose images are not beside it."""
    overrides: list[str] = field(default_factory=list)
    """``TrainConfig`` overrides for this dataset's runs (after the suite's ``base_overrides``)."""

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        require(
            bool(_NAME.fullmatch(self.name)) and self.name not in (".", ".."),
            "name",
            self.name,
            "must be a folder name: letters, digits, '_', '.' or '-'",
        )
        require(bool(self.root.strip()), "root", self.root, "must name a dataset")
        require(
            self.val is None or self.val != self.test,
            "val",
            self.val,
            "must differ from test: choosing the checkpoint on the split it is scored on inflates the score",
        )


@dataclass
class SuiteConfig:
    """A benchmark suite (``sam3tune suite --config SUITE.yaml``)."""

    datasets: list[SuiteDataset] = field(default_factory=list)
    datasets_under: Path | None = None
    """Also every sub-folder of this folder holding a ``train`` split is a dataset named after it (splits
    ``train`` and ``test``, no validation): RF100-VL's 100 folders in one line."""
    seeds: list[int] = field(default_factory=lambda: [300, 30, 3])
    """One fine-tune per seed and dataset: the seed of the K-shot sample (``data.shots_seed``). The
    training seed (``loop.seed``) stays the base config's, so the spread over seeds is that of the
    samples, as in the SAM 3 paper (ODinW13 seeds 300, 30, 3)."""
    shots: int = 10
    """K: each run trains on the K-shot sample of ``train`` drawn with its seed (``data.shots``)."""
    presampled: bool = False
    """``train`` already is the K-shot sample of each seed (a file per seed, ``{seed}`` in its name): train
    on it as it is instead of sampling."""
    shots_rule: Literal["image", "instance"] = "image"
    """What a shot is (``data.shots_rule``): an image showing the category (ODinW) or one object."""
    base_config: Path | None = None
    """The ``TrainConfig`` YAML every fine-tune starts from (its ``model.name`` is the zero-shot model)."""
    base_overrides: list[str] = field(default_factory=list)
    """``TrainConfig`` overrides applied to every run, after ``base_config``."""
    eval: EvalConfig = field(default_factory=EvalConfig)
    """How both models are evaluated on ``test`` (``sam3tune eval``'s settings)."""
    metric: str = "bbox_AP"
    """The headline metric of the tables: a key of ``eval.json``'s summary (``bbox_AP``, ``bbox_AP50``,
    ``segm_AP``, ``bbox_cgF1``, ...)."""
    reference: str | None = None
    """Published figures to print beside the suite's: ``odinw13``, ``rf100vl`` (shipped files) or a YAML
    file of the same form (``sam3tune/suite/references/``)."""
    output_dir: Path = Path("suite")
    """Where the runs and tables go (``--out``); running the same suite again continues it."""
    device: str = "auto"
    """Torch device of every fine-tune and evaluation (``loop.device`` and ``eval``'s ``device``)."""

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        require(
            bool(self.datasets) or self.datasets_under is not None,
            "datasets",
            self.datasets,
            "must list at least one dataset (or give datasets_under)",
        )
        names = [d.name for d in self.datasets]
        require(len(set(names)) == len(names), "datasets", names, "names must be unique")
        require(bool(self.seeds), "seeds", self.seeds, "must list at least one seed")
        require(len(set(self.seeds)) == len(self.seeds), "seeds", self.seeds, "must be distinct")
        require(all(s >= 0 for s in self.seeds), "seeds", self.seeds, "must be >= 0")
        require_range(self, "shots", low=1)
        require(bool(self.metric.strip()), "metric", self.metric, "must name a metric")
        require_device(self)

    def all_datasets(self) -> list[SuiteDataset]:
        """``datasets``, then the sub-folders of ``datasets_under`` (sorted) not already listed by name."""
        found = list(self.datasets)
        if self.datasets_under is not None:
            folder = Path(self.datasets_under)
            if not folder.is_dir():
                raise ConfigError(f"datasets_under={str(folder)!r}: no such folder")
            listed = {d.name for d in found}
            for sub in sorted(p for p in folder.iterdir() if (p / "train").is_dir() and p.name not in listed):
                found.append(SuiteDataset(name=sub.name, root=str(sub)))
        return found
