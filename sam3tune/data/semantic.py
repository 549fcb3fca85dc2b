"""Semantic (mask-only) datasets: images + label maps of class indices, as queries for SAM 3's semantic head.

Layout (detected by ``semantic.yaml`` at the root)::

    semantic.yaml          names: {1: road, 2: car}   (or a list: index = position); ignore_index: 255
    train/images/a.jpg     train/labels/a.png          (a PNG of class indices, same stem, same size)
    valid/images/...       valid/labels/...

Every index listed in ``names`` is a class (a prompt, cleaned as COCO category names are); pixels of
other indices (e.g. an unlisted background 0) belong to no class; pixels equal to ``ignore_index`` are
left out of the loss and the metrics. One query per (image, class), whether the class is present or not
(absent classes in training as ``DataConfig.negatives`` says);
its target is the class's pixels (``semantic_mask``, empty when absent) and ``semantic_valid`` (not
ignored), both ``(M, M)`` bool, sampled nearest-neighbour through the same geometry as the image. The
``boxes`` entry is empty: such queries have no instance targets.
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import yaml
from PIL import Image, ImageDraw
from torch.utils.data import Dataset

from sam3tune.data.config import DataConfig
from sam3tune.data.dataset import Sample
from sam3tune.data.images import read_rgb
from sam3tune.data.layout import ROBOFLOW_ANNOTATIONS, SEMANTIC_YAML
from sam3tune.data.problems import DataError, ProblemReport
from sam3tune.data.queries import clean_prompt, negative_count
from sam3tune.data.synth import SynthConfig, render_image
from sam3tune.data.transforms import MaskSampler, eval_geometry, sample_train_geometry, transform_image
from sam3tune.data.yolo import DATA_YAML_NAMES, IMAGE_SUFFIXES, read_data_yaml, yaml_class_names

_SPLIT_ALIASES = {"valid": ("valid", "val"), "val": ("val", "valid")}


@dataclass(frozen=True)
class SemanticImage:
    """A usable image and its label map (same size, after EXIF orientation of the image)."""

    image_id: int
    file_name: str
    path: Path
    label_path: Path
    width: int
    height: int


@dataclass
class SemanticSplit:
    """One semantic split: usable images, classes (index -> name), prompts, ignore index, problems."""

    name: str
    folder: Path
    images: list[SemanticImage]
    classes: dict[int, str]
    prompts: dict[int, str]
    ignore_index: int | None
    problems: ProblemReport = field(default_factory=ProblemReport)


def is_semantic_dataset(path: str | Path | None) -> bool:
    """Whether ``path`` is a semantic dataset root (holds ``semantic.yaml``); False for a path that cannot
    be looked at (the reader of the dataset then names the problem)."""
    return path is not None and os.path.isfile(Path(path) / SEMANTIC_YAML)


def read_semantic_yaml(root: Path) -> tuple[dict[int, str], int | None]:
    """Classes (label index -> name) and the ignore index (None: every pixel counts) of ``root``."""
    path = root / SEMANTIC_YAML
    config = read_data_yaml(path)
    classes = yaml_class_names(config, path)
    ignore = config.get("ignore_index", 255)
    if ignore is not None and (not isinstance(ignore, int) or ignore in classes):
        raise DataError(
            "layout_invalid", f"{path}: ignore_index {ignore!r} must be an integer that is no class"
        )
    return classes, ignore


def load_semantic_split(root: str | Path, split: str) -> SemanticSplit:
    """Read and check split ``split`` of the semantic dataset at ``root``.

    Images without a label map, label maps without an image, unreadable files, size mismatches and
    label maps that are not single-channel are counted and skipped; indices that are neither a class
    nor the ignore index count as no class (reported once per image).
    """
    root = Path(root)
    classes, ignore = read_semantic_yaml(root)
    folder = next(
        (root / n for n in _SPLIT_ALIASES.get(split, (split,)) if (root / n / "images").is_dir()), None
    )
    if folder is None:
        raise DataError(
            "split_missing", f"{root}: no split {split!r} (expected {root / split}/images and labels)"
        )
    instance_files = [
        p
        for p in (folder / ROBOFLOW_ANNOTATIONS, *(root / n for n in DATA_YAML_NAMES), root / "labels")
        if p.exists()
    ]
    if instance_files:
        raise DataError(
            "mixed_labels",
            f"{root}: semantic label maps ({SEMANTIC_YAML}) and instance labels ({instance_files[0]}) in one "
            "dataset: training both at once is not supported; keep them in separate dataset folders",
        )
    problems = ProblemReport()
    images: list[SemanticImage] = []
    image_files = sorted(p for p in (folder / "images").rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
    labelled = set()
    for image_id, path in enumerate(image_files, start=1):
        relative = path.relative_to(folder / "images")
        label = folder / "labels" / relative.with_suffix(".png")
        labelled.add(label)
        checked = _check_pair(path, label, classes, ignore, problems)
        if checked is not None:
            images.append(SemanticImage(image_id, relative.as_posix(), path, label, *checked))
    for label in sorted((folder / "labels").rglob("*.png")) if (folder / "labels").is_dir() else []:
        if label not in labelled:
            problems.add(
                "label_without_image", f"{label}: no image named {label.stem}.* in {folder / 'images'}"
            )
    if not images:
        raise DataError("no_usable_images", f"{folder}: no image with a usable label map ({problems.counts})")
    prompts = {index: clean_prompt(name) for index, name in classes.items()}
    seen: dict[str, int] = {}
    for index, prompt in sorted(prompts.items()):
        if prompt in seen:
            raise DataError(
                "prompt_collision",
                f"{root / SEMANTIC_YAML}: classes {seen[prompt]} {classes[seen[prompt]]!r} and {index} "
                f"{classes[index]!r} both give the prompt {prompt!r}; rename one",
            )
        seen[prompt] = index
    return SemanticSplit(split, folder, images, classes, prompts, ignore, problems)


def read_label_map(path: Path) -> np.ndarray:
    """The class indices of a label-map PNG as an ``(H, W)`` int64 array (palette PNGs: the indices)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        with Image.open(path) as img:
            if img.mode not in ("L", "P", "I", "I;16", "I;16B", "I;16L", "1"):
                raise ValueError(f"mode {img.mode}: a label map must be one channel of class indices")
            return np.asarray(img, dtype=np.int64)


def _check_pair(
    image: Path, label: Path, classes: dict[int, str], ignore: int | None, problems: ProblemReport
) -> tuple[int, int] | None:
    if not label.is_file():
        problems.add("label_map_missing", f"{image}: no label map {label}")
        return None
    try:
        with Image.open(image) as img:
            size = img.size
        values = read_label_map(label)
    except (OSError, SyntaxError, ValueError) as err:
        problems.add("image_unreadable", f"{image} / {label}: {err}")
        return None
    if values.shape != (size[1], size[0]):
        problems.add(
            "image_size_mismatch",
            f"{label}: {values.shape[1]}x{values.shape[0]}, image {image.name} {size[0]}x{size[1]}",
        )
        return None
    unknown = set(np.unique(values).tolist()) - set(classes) - {ignore}
    if unknown and any(v != 0 for v in unknown):  # 0 is the usual background, not worth a report
        problems.add(
            "label_value_unknown", f"{label}: indices {sorted(unknown)[:8]} are no class (no class there)"
        )
    return size


class SemanticDataset(Dataset):
    """One sample per image with a query per class (absent classes in training as ``config.negatives``
    says: all by default, none, or k sampled per image and epoch); transforms as
    :class:`~sam3tune.data.dataset.QueryDataset` (same seeding, so samples are a pure function of
    ``(seed, epoch, index)``)."""

    def __init__(
        self,
        split: SemanticSplit,
        config: DataConfig,
        train: bool,
        seed: int = 0,
        augment: bool | None = None,
    ):
        self.split = split
        self.config = config
        self.train = train
        self.augment = train if augment is None else augment and train
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.split.images)

    def __getitem__(self, index: int) -> Sample:
        image = self.split.images[index]
        geometry_seed, negatives_seed = np.random.SeedSequence([self.seed, self.epoch, index]).spawn(2)
        if self.augment:
            geometry = sample_train_geometry(
                np.random.default_rng(geometry_seed), self.config.resolution, self.config.hflip
            )
        else:
            geometry = eval_geometry(self.config.resolution)
        pixels = transform_image(read_rgb(image.path, at_least=geometry.side), geometry)
        side = self.config.target_mask_resolution
        sampler = MaskSampler.build(image.height, image.width, geometry, side)
        labels = read_label_map(image.label_path)
        ignored = sampler(labels == self.split.ignore_index) if self.split.ignore_index is not None else None
        classes = self._classes(labels, np.random.default_rng(negatives_seed))
        targets = []
        for class_index in classes:
            target = {
                "boxes": torch.zeros(0, 4),
                "semantic_mask": torch.from_numpy(sampler(labels == class_index)),
            }
            if ignored is not None:
                target["semantic_valid"] = torch.from_numpy(~ignored)
            targets.append(target)
        return Sample(
            image=pixels,
            image_id=image.image_id,
            orig_size=(image.height, image.width),
            category_ids=classes,
            prompts=[self.split.prompts[c] for c in classes],
            targets=targets,
        )

    def _classes(self, labels: np.ndarray, rng: np.random.Generator) -> list[int]:
        """The classes queried on an image, ascending: every present class, and the absent ones as
        ``config.negatives`` says in training (all, none or k sampled), all of them in evaluation."""
        every = sorted(self.split.classes)
        present = set(np.unique(labels).tolist()) & set(every)
        absent = [c for c in every if c not in present]
        k = negative_count(len(absent), self.config.negatives if self.train else "all")
        picked = (
            absent
            if k == len(absent)
            else [absent[i] for i in rng.choice(len(absent), size=k, replace=False)]
        )
        return sorted([*present, *picked])


def semantic_splits(root: str | Path) -> list[str]:
    """The split folders (train, valid or val, test) of a semantic dataset that hold ``images/``."""
    return [n for n in ("train", "valid", "val", "test") if (Path(root) / n / "images").is_dir()]


def build_semantic_dataset(
    config: DataConfig, split: str, train: bool, seed: int = 0, augment: bool = True
) -> SemanticDataset:
    """The semantic dataset of ``split`` of ``config.root`` (problems logged)."""
    loaded = load_semantic_split(config.root, split)
    loaded.problems.log(str(loaded.folder))
    return SemanticDataset(loaded, config, train=train, seed=seed, augment=augment)


def generate_semantic(config: SynthConfig, out: str | Path) -> dict[str, int]:
    """Write the synthetic shapes of ``config`` as a semantic dataset in ``out``: class ``i + 1`` is the
    ``i``-th category (objects painted in drawing order over background 0), ``semantic.yaml`` with the
    names and ignore index 255. Same images as :func:`sam3tune.data.synth.generate`. Returns images
    per split."""
    out = Path(out)
    names = config.category_names()
    config.object_kinds()  # validate before writing anything
    written = {}
    for split_number, (split, size) in enumerate(config.splits):
        for folder in ("images", "labels"):
            (out / split / folder).mkdir(parents=True, exist_ok=True)
        for index in range(size):
            rng = np.random.default_rng(np.random.SeedSequence([config.seed, split_number, index]))
            image, objects = render_image(config, rng)
            label = Image.new("L", image.size, 0)
            draw = ImageDraw.Draw(label)
            for obj in objects:
                if obj.categories:
                    points = list(zip(obj.polygon[0::2], obj.polygon[1::2], strict=True))
                    draw.polygon(points, fill=obj.categories[0] + 1)
            image.save(out / split / "images" / f"{index:06d}.jpg", quality=config.jpeg_quality)
            label.save(out / split / "labels" / f"{index:06d}.png")
        written[split] = size
    classes = {i + 1: name for i, name in enumerate(names)}
    (out / SEMANTIC_YAML).write_text(yaml.safe_dump({"names": classes, "ignore_index": 255}))
    return written
