"""Where a split's annotation file and images are: Roboflow folders, COCO files, safe image paths."""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from pathlib import Path, PurePosixPath, PureWindowsPath

from sam3tune.data.hf_datasets import BboxFormat, hf_source, hf_split_files
from sam3tune.data.problems import DataError
from sam3tune.data.yolo import YoloSplit, find_yolo_splits, is_yolo_dataset
from sam3tune.errors import describe_os_error

ROBOFLOW_ANNOTATIONS = "_annotations.coco.json"
SEMANTIC_YAML = "semantic.yaml"  # marks a semantic (label-map) dataset, see sam3tune.data.semantic
SPLIT_NAMES = ("train", "valid", "val", "test")
_ALIASES = {"valid": ("valid", "val"), "val": ("val", "valid")}


@dataclass(frozen=True)
class SplitFiles:
    """One split on disk: its name, its COCO annotation file and the folder its images are in."""

    name: str
    annotation_file: Path
    image_dir: Path
    yolo: YoloSplit | None = None
    """Set for a YOLO split: where its images, labels and class names are; ``annotation_file`` is then
    the split's labels folder (or its data.yaml when it has image-list files only)."""


def find_splits(
    path: str | Path, image_dir: str | Path | None = None, hf_bbox_format: BboxFormat = "xywh"
) -> list[SplitFiles]:
    """All splits under ``path``.

    ``path`` may be a Roboflow export root (``train/``, ``valid/`` or ``val/``, ``test/`` each
    holding ``_annotations.coco.json`` with the images beside it), one such split folder, a
    COCO JSON file (images in ``image_dir``, by default the JSON's folder), a YOLO dataset
    root (see :mod:`sam3tune.data.yolo`), or a Hugging Face dataset (``hf:ORG/NAME``, a ``save_to_disk``
    or parquet folder; written once as COCO splits in the cache, see :mod:`sam3tune.data.hf_datasets`,
    its boxes read as ``hf_bbox_format``).
    """
    source = hf_source(path)
    if source is not None:
        return [SplitFiles(*split) for split in hf_split_files(source, hf_bbox_format)]
    path = Path(path)
    if path.is_file():
        return [SplitFiles(path.stem, path, Path(image_dir) if image_dir else path.parent)]
    if not path.is_dir():
        raise DataError("dataset_missing", f"{path}: no such file or folder")
    if (path / ROBOFLOW_ANNOTATIONS).is_file():
        return [SplitFiles(path.name, path / ROBOFLOW_ANNOTATIONS, Path(image_dir) if image_dir else path)]
    splits = [
        SplitFiles(name, path / name / ROBOFLOW_ANNOTATIONS, path / name)
        for name in SPLIT_NAMES
        if (path / name / ROBOFLOW_ANNOTATIONS).is_file()
    ]
    if not splits and (path / SEMANTIC_YAML).is_file():
        raise DataError(
            "layout_invalid",
            f"{path}: a semantic dataset ({SEMANTIC_YAML}, label maps): `sam3tune train`, `eval`, `predict` "
            "and `data inspect` read it (docs/semantic.md); `doctor` and `data convert` need instance labels",
        )
    if not splits and is_yolo_dataset(path):
        return [
            SplitFiles(split.name or path.name, split.labels, split.images, split)
            for split in find_yolo_splits(path)
        ]
    if not splits:
        raise DataError(
            "layout_invalid",
            f"{path}: found no {ROBOFLOW_ANNOTATIONS} in it or in its {'/'.join(SPLIT_NAMES)} folders, "
            "and no YOLO data.yaml or images/ + labels/ (pass a COCO JSON file to use another layout)",
        )
    return splits


def split_aliases(split: str) -> tuple[str, ...]:
    """The folder names that stand for split ``split`` (``valid`` and ``val`` for each other)."""
    return _ALIASES.get(split, (split,))


def resolve_split(
    root: str | Path, split: str, image_dir: str | Path | None = None, hf_bbox_format: BboxFormat = "xywh"
) -> SplitFiles:
    """The split named ``split`` of the dataset at ``root``.

    ``split`` is a folder name of a Roboflow export (``valid`` and ``val`` stand for each other)
    or the path of a COCO JSON file, relative to ``root`` or absolute. When ``root`` is itself a
    split folder or a JSON file, that split is returned whatever ``split`` says. A Hugging Face dataset's
    splits are read as :func:`find_splits` reads them (``hf_bbox_format``).
    """
    try:
        if hf_source(root) is not None:
            return _named_split(find_splits(root, hf_bbox_format=hf_bbox_format), split, root, image_dir)
        return _resolve_split(Path(root), split, image_dir)
    except OSError as err:  # a name the filesystem refuses, a folder that cannot be read
        raise DataError("layout_invalid", describe_os_error(err, root, "read", "data.root")) from err


def _resolve_split(root: Path, split: str, image_dir: str | Path | None) -> SplitFiles:
    if not root.exists():
        raise DataError("dataset_missing", f"{root}: no such file or folder")
    candidate = Path(split) if Path(split).is_absolute() else root / split
    if candidate.is_file():
        return SplitFiles(candidate.stem, candidate, Path(image_dir) if image_dir else candidate.parent)
    if root.is_file() or (root / ROBOFLOW_ANNOTATIONS).is_file():
        return find_splits(root, image_dir)[0]
    available = find_splits(root) if root.is_dir() else []
    if len(available) == 1 and available[0].name not in SPLIT_NAMES:
        return available[0]  # an unsplit YOLO folder (images/ + labels/) serves as every split
    return _named_split(available, split, root, image_dir)


def _named_split(
    available: list[SplitFiles], split: str, root: str | Path, image_dir: str | Path | None
) -> SplitFiles:
    """The split of ``available`` named ``split`` (or an alias), its images in ``image_dir`` if given."""
    for name in split_aliases(split):
        for found in available:
            if found.name == name:
                return dataclasses.replace(found, image_dir=Path(image_dir) if image_dir else found.image_dir)
    names = ", ".join(s.name for s in available) or "none"
    raise DataError("split_missing", f"{root}: no split {split!r} (splits found: {names})")


def image_path(image_dir: Path, file_name: str, where: str) -> Path:
    """``image_dir / file_name``, refusing absolute names and names that climb out of ``image_dir``.

    ``where`` names the culprit (annotation file and image id) in the error.
    """
    if (
        not file_name
        or PurePosixPath(file_name).is_absolute()
        or PureWindowsPath(file_name).is_absolute()
        or PureWindowsPath(file_name).drive
    ):
        raise DataError("path_escapes_root", f"{where}: file_name {file_name!r} is absolute or empty")
    joined = os.path.normpath(os.path.join(image_dir, file_name))
    base = os.path.normpath(image_dir)
    if (
        os.path.commonpath([base, joined]) != base
        or ".." in PurePosixPath(file_name.replace("\\", "/")).parts
    ):
        raise DataError(
            "path_escapes_root", f"{where}: file_name {file_name!r} escapes the image folder {image_dir}"
        )
    return Path(joined)


def resolves_inside(real_path: str | Path, folder: Path) -> bool:
    """Whether ``real_path`` (already resolved, symlinks included) lies inside ``folder`` once that is
    resolved too."""
    base = os.path.realpath(folder)
    return os.path.commonpath([base, os.fspath(real_path)]) == base
