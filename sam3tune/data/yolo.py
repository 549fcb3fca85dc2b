"""YOLO detect / segment folders read as COCO: the same in-memory structure the COCO reader validates.

Layouts (Ultralytics, Roboflow and CVAT exports):

- ``data.yaml`` at the root with ``names`` (a list, or a mapping class id -> name) and the splits
  ``train``, ``val`` (or ``valid``) and ``test``: an image folder, an image-list ``.txt`` file (one
  path a line, relative to the list's folder) or a list of those, relative to the root (a leading
  ``../`` as Roboflow writes it is tolerated, ``path`` is honoured when it is a folder inside the
  root). The label file of an image is its path with the last ``images`` component replaced by
  ``labels`` and the suffix by ``.txt`` (``images/train/a.jpg`` -> ``labels/train/a.txt``;
  ``train/images/a.jpg`` -> ``train/labels/a.txt``).
- ``images/`` + ``labels/`` without ``data.yaml``: class names from ``classes.txt`` or ``obj.names``
  (one per line, in the root or in ``labels/``); ``images/train``, ``images/val`` ... are the splits,
  otherwise ``images/`` is one unsplit folder.

Labels: one ``.txt`` per image (same relative path, same stem), one object per line: a class id,
then coordinates normalised by the image size, either ``cx cy w h`` (a box, no mask) or
``x1 y1 x2 y2 ... xn yn`` (a polygon with n >= 3; its box is the polygon's bounds). Both kinds may
share a file. An image without a label file, or with an empty one, has no objects: a negative for
every class. Class id ``i`` becomes COCO category ``i``; images get ids 1, 2, ... in path order.

Every line is checked here, so messages name the label file and line; the COCO reader then
validates the images and the resulting objects like any COCO split.
"""

from __future__ import annotations

import math
import os
import warnings
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

import yaml
from PIL import Image

from sam3tune.config import parse_yaml
from sam3tune.data.images import oriented_size
from sam3tune.data.problems import DataError, ProblemReport

IMAGE_SUFFIXES = (".bmp", ".jpeg", ".jpg", ".png", ".tif", ".tiff", ".webp")
DATA_YAML_NAMES = ("data.yaml", "data.yml")
CLASS_FILE_NAMES = ("classes.txt", "obj.names")
_SPLIT_FOLDERS = ("train", "valid", "val", "test")
_YAML_SPLIT_KEYS = (("train", "train"), ("val", "valid"), ("valid", "valid"), ("test", "test"))
_CLIP_TOLERANCE_PX = 1e-3  # coordinates this close outside the image are clipped without a report


@dataclass(frozen=True)
class YoloSplit:
    """One YOLO split on disk: its name (None for an unsplit ``images/`` folder), the dataset root (which
    listed images may not leave), the folder its image
    file names are relative to, its (first) labels folder, the file naming the classes (``data.yaml``
    or ``classes.txt``), and where its images are: image folders and image-list ``.txt`` files (empty:
    the ``images`` folder itself)."""

    name: str | None
    root: Path
    images: Path
    labels: Path
    classes: Path
    sources: tuple[Path, ...] = ()


def is_yolo_dataset(path: Path) -> bool:
    """Whether folder ``path`` looks like a YOLO dataset (``data.yaml``, or ``images/`` + ``labels/``)."""
    return path.is_dir() and (
        any((path / name).is_file() for name in DATA_YAML_NAMES)
        or ((path / "images").is_dir() and (path / "labels").is_dir())
    )


def find_yolo_splits(root: Path) -> list[YoloSplit]:
    """The splits of the YOLO dataset at ``root`` (see the module docstring for the layouts).

    Raises :class:`DataError` (kind ``layout_invalid``) when the class names or a split folder named
    by ``data.yaml`` cannot be found, ``path_escapes_root`` when a folder lies outside ``root``.
    """
    data_yaml = next((root / n for n in DATA_YAML_NAMES if (root / n).is_file()), None)
    if data_yaml is not None:
        class_names(data_yaml)  # fail early on missing names
        config = read_data_yaml(data_yaml)
        if "kpt_shape" in config:
            raise DataError(
                "layout_invalid",
                f"{data_yaml}: a keypoint (pose) dataset (kpt_shape): only detect and segment labels "
                "are read",
            )
        splits = _yaml_splits(root, data_yaml, config)
        if splits:
            return splits
        classes = data_yaml
    else:
        classes = _class_file(root)
    return _folder_splits(root, classes)


def read_data_yaml(path: Path) -> dict[str, Any]:
    """The mapping in a YOLO ``data.yaml``."""
    try:
        config = parse_yaml(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as err:
        raise DataError("layout_invalid", f"{path}: cannot read the YAML file: {err}") from err
    if not isinstance(config, dict):
        raise DataError(
            "layout_invalid", f"{path}: expected a mapping with 'names', got {type(config).__name__}"
        )
    return config


def class_names(path: Path) -> dict[int, str]:
    """Class id -> name from a ``data.yaml`` (``names`` list or mapping; ``nc`` checked when given)
    or a ``classes.txt`` / ``obj.names`` file (one name per line, class id = line index)."""
    if path.suffix in (".yaml", ".yml"):
        config = read_data_yaml(path)
        result = yaml_class_names(config, path)
        nc = config.get("nc")
        if nc is not None and nc != len(result):
            raise DataError("layout_invalid", f"{path}: nc is {nc!r} but names lists {len(result)} classes")
        return result
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as err:
        raise DataError("layout_invalid", f"{path}: cannot read the class names: {err}") from err
    while lines and not lines[-1].strip():
        lines.pop()
    if not lines or not all(line.strip() for line in lines):
        raise DataError("layout_invalid", f"{path}: expected one class name per line, without empty lines")
    return {i: line.strip() for i, line in enumerate(lines)}


def yaml_class_names(config: dict[str, Any], path: Path) -> dict[int, str]:
    """Class id -> name from the ``names`` entry (a list, or a mapping id -> name) of a YAML ``config``
    read from ``path`` (named in errors)."""
    names = config.get("names")
    if isinstance(names, list):
        names = dict(enumerate(names))
    if not isinstance(names, dict) or not names:
        raise DataError("layout_invalid", f"{path}: 'names' must be a non-empty list or mapping id -> name")
    result = {}
    for key, name in names.items():
        class_id = _class_id(str(key))
        if class_id is None or class_id < 0 or not str(name).strip():
            raise DataError(
                "layout_invalid", f"{path}: names entry {key!r}: {name!r} needs an id >= 0 and a name"
            )
        result[class_id] = str(name).strip()
    return result


def read_yolo_split(split: YoloSplit, problems: ProblemReport) -> dict[str, Any]:
    """The split as a COCO dict (``images`` with sizes, ``annotations``, ``categories``).

    Bad lines, label files without an image and unreadable images are counted in ``problems``
    with the file (and line) as culprit; see the module docstring for the label format.
    """
    root = split.root
    names = class_names(split.classes)
    images = _image_files(split, problems)
    label_of = {p: _label_path(root, p) for p in images}
    sharing: dict[Path, list[Path]] = {}
    for image, label in label_of.items():
        sharing.setdefault(label, []).append(image)
    coco_images: list[dict[str, Any]] = []
    annotations: list[dict[str, Any]] = []
    for image_id, image in enumerate(images, start=1):
        label = label_of[image]
        if len(sharing[label]) > 1:
            others = ", ".join(p.name for p in sharing[label] if p != image)
            problems.add("image_label_ambiguous", f"{image}: {label.name} is also the label file of {others}")
            continue
        size = _image_size(image)
        if size is None:
            problems.add("image_unreadable", f"{image}: cannot read the image header")
            continue
        lines = _label_lines(label, image, problems)
        if lines is None:
            continue
        width, height = size
        coco_images.append(
            {
                "id": image_id,
                "file_name": image.relative_to(split.images).as_posix(),
                "width": width,
                "height": height,
            }
        )
        for line_no, line in enumerate(lines, start=1):
            obj = _parse_line(line, f"{label} line {line_no}", width, height, names, problems)
            if obj is not None:
                annotations.append({"id": len(annotations) + 1, "image_id": image_id, "iscrowd": 0, **obj})
    for folder in (s for s in split.sources or (split.images,) if s.is_dir()):
        labels_dir = _label_path(root, folder / "x").parent
        for label in sorted(labels_dir.rglob("*.txt")) if labels_dir.is_dir() else []:
            if label not in sharing and not (label.parent == labels_dir and label.name in CLASS_FILE_NAMES):
                problems.add("label_without_image", f"{label}: no image named {label.stem}.* in {folder}")
    return {
        "images": coco_images,
        "annotations": annotations,
        "categories": [{"id": i, "name": n, "supercategory": ""} for i, n in sorted(names.items())],
    }


def _yaml_splits(root: Path, data_yaml: Path, config: dict[str, Any]) -> list[YoloSplit]:
    base = root
    if isinstance(config.get("path"), str) and config["path"].strip():
        candidate = root / config["path"]
        if candidate.is_dir() and _inside(root, candidate):
            base = candidate
    splits: dict[str, YoloSplit] = {}
    for key, name in _YAML_SPLIT_KEYS:
        value = config.get(key)
        if value is None or value == "" or name in splits:
            continue
        where = f"{data_yaml}: {key}: {value!r}"
        values = value if isinstance(value, list) else [value]
        if not values or not all(isinstance(v, str) and v.strip() for v in values):
            raise DataError(
                "layout_invalid", f"{where}: expected an image folder, an image-list file or a list"
            )
        sources = tuple(_split_source(root, base, v, where) for v in values)
        folders = [s for s in sources if s.is_dir()]
        for folder in folders:
            _labels_folder(root, folder, where)
        if len(sources) == 1 and folders:
            splits[name] = YoloSplit(
                name, root, folders[0], _labels_folder(root, folders[0], where), data_yaml
            )
        else:
            labels = _labels_folder(root, folders[0], where) if folders else data_yaml
            splits[name] = YoloSplit(name, root, Path(os.path.normpath(root)), labels, data_yaml, sources)
    return list(splits.values())


def _split_source(root: Path, base: Path, value: str, where: str) -> Path:
    """The image folder or image-list file ``value`` names (relative to ``path`` or the root, a leading
    ``../`` tolerated), inside ``root``."""
    parts = PurePosixPath(value.replace("\\", "/")).parts
    stripped = Path(*[p for p in parts if p not in ("..", ".")]) if parts else Path()
    candidates = [c for c in (base / value, root / value, root / stripped) if c.exists()]
    for candidate in candidates:
        if _inside(root, candidate):
            return Path(os.path.normpath(candidate))
    if candidates:
        raise DataError("path_escapes_root", f"{where}: {candidates[0]} is outside {root}")
    raise DataError("layout_invalid", f"{where}: no such image folder or list file under {root}")


def _image_files(split: YoloSplit, problems: ProblemReport) -> list[Path]:
    """The split's image files, sorted: every image under its folders, every line of its list files
    (relative to the list's folder, or absolute), each inside ``root``."""
    root = split.root
    found: set[Path] = set()
    for source in split.sources or (split.images,):
        if source.is_dir():
            found.update(p for p in source.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
            continue
        try:
            lines = source.read_text(encoding="utf-8").splitlines()
        except (OSError, UnicodeDecodeError) as err:
            raise DataError("layout_invalid", f"{source}: cannot read the image list: {err}") from err
        for line_no, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            path = Path(os.path.normpath(source.parent / line.strip()))
            if not _inside(root, path):
                raise DataError(
                    "path_escapes_root", f"{source} line {line_no}: {line.strip()!r} is outside {root}"
                )
            if not path.is_file():
                problems.add("image_missing", f"{source} line {line_no}: {path} not found")
                continue
            found.add(path)
    return sorted(found)


def _label_path(root: Path, image: Path) -> Path:
    """``image``'s label file: its path below ``root`` with the last ``images`` component replaced by
    ``labels`` and the suffix by ``.txt``."""
    parts = Path(os.path.relpath(image, root)).parts
    if "images" not in parts[:-1]:
        raise DataError(
            "layout_invalid",
            f"{image}: no 'images' folder in its path below {root}, so its label file cannot be found "
            "(YOLO mirrors images/ into labels/)",
        )
    i = len(parts) - 2 - parts[-2::-1].index("images")
    return Path(os.path.normpath(root)).joinpath(*parts[:i], "labels", *parts[i + 1 :]).with_suffix(".txt")


def _labels_folder(root: Path, images: Path, where: str) -> Path:
    """The mirror of the image folder ``images`` whose last ``images`` component (below ``root``) is
    ``labels``; it must exist."""
    parts = Path(os.path.relpath(images, root)).parts
    if "images" not in parts:
        raise DataError(
            "layout_invalid",
            f"{where}: the image folder {images} has no 'images' component below {root}, so its labels "
            "folder cannot be found (YOLO mirrors images/ into labels/)",
        )
    labels = _label_path(root, images / "x").parent
    if not labels.is_dir():
        raise DataError("layout_invalid", f"{where}: no labels folder {labels} for the images in {images}")
    return labels


def _folder_splits(root: Path, classes: Path) -> list[YoloSplit]:
    if (root / "images").is_dir():
        named = [n for n in _SPLIT_FOLDERS if (root / "images" / n).is_dir()]
        folders = [(n, root / "images" / n) for n in named] or [(None, root / "images")]
    else:
        folders = [(n, root / n / "images") for n in _SPLIT_FOLDERS if (root / n / "images").is_dir()]
        if not folders:
            raise DataError(
                "layout_invalid", f"{root}: no images/ folder and no train/images, valid/images ... folders"
            )
    splits: dict[str | None, YoloSplit] = {}
    for name, folder in folders:
        name = "valid" if name == "val" else name
        if name not in splits:
            splits[name] = YoloSplit(name, root, folder, _labels_folder(root, folder, str(root)), classes)
    return list(splits.values())


def _class_file(root: Path) -> Path:
    for folder in (root, root / "labels"):
        for name in CLASS_FILE_NAMES:
            if (folder / name).is_file():
                return folder / name
    raise DataError(
        "layout_invalid",
        f"{root}: no class names: add a data.yaml with 'names', or a classes.txt (one name per line)",
    )


def _inside(root: Path, path: Path) -> bool:
    base = os.path.normpath(os.path.abspath(root))
    return os.path.commonpath([base, os.path.normpath(os.path.abspath(path))]) == base


def _image_size(path: Path) -> tuple[int, int] | None:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(path) as img:
                return oriented_size(img)
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError):
        return None


def _label_lines(label: Path, image: Path, problems: ProblemReport) -> list[str] | None:
    if not label.exists():
        return []
    try:
        return label.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as err:
        problems.add("label_file_unreadable", f"{label} (image {image.name}): {err}")
        return None


def _parse_line(
    line: str, where: str, width: int, height: int, names: dict[int, str], problems: ProblemReport
) -> dict[str, Any] | None:
    tokens = line.split()
    if not tokens:
        return None  # blank lines carry nothing
    class_id = _class_id(tokens[0])
    coords = _numbers(tokens[1:])
    if class_id is None or coords is None or not coords:
        problems.add(
            "label_line_malformed", f"{where}: {line.strip()!r:.80} (expected a class id and coordinates)"
        )
        return None
    if class_id not in names:
        problems.add(
            "annotation_missing_category",
            f"{where}: class {class_id} is not among the {len(names)} class names "
            f"(ids {min(names)}..{max(names)})",
        )
        return None
    if len(coords) == 4:
        return _box_object(class_id, coords, where, width, height, problems)
    if len(coords) < 6 or len(coords) % 2:
        problems.add(
            "polygon_invalid",
            f"{where}: {len(coords)} coordinates (4 for a box, or >= 3 x y pairs for a polygon)",
        )
        return None
    return _polygon_object(class_id, coords, where, width, height, problems)


def _box_object(
    class_id: int, coords: list[float], where: str, width: int, height: int, problems: ProblemReport
) -> dict[str, Any] | None:
    cx, cy, w, h = coords
    if w <= 0 or h <= 0:
        problems.add("box_nonpositive", f"{where}: box cx cy w h = {coords}")
        return None
    raw = ((cx - w / 2) * width, (cy - h / 2) * height, (cx + w / 2) * width, (cy + h / 2) * height)
    box = _clip(raw, width, height, coords, where, problems)
    if box is None:
        return None
    return {
        "category_id": class_id,
        "bbox": [box[0], box[1], box[2] - box[0], box[3] - box[1]],
        "segmentation": [],
    }


def _polygon_object(
    class_id: int, coords: list[float], where: str, width: int, height: int, problems: ProblemReport
) -> dict[str, Any] | None:
    xs = [x * width for x in coords[0::2]]
    ys = [y * height for y in coords[1::2]]
    raw = (min(xs), min(ys), max(xs), max(ys))
    twice_area = sum(xs[i - 1] * ys[i] - xs[i] * ys[i - 1] for i in range(len(xs)))  # shoelace
    if abs(twice_area) <= 1e-9 * width * height:
        problems.add("box_nonpositive", f"{where}: the polygon has no area (its points lie on a line)")
        return None
    box = _clip(raw, width, height, coords, where, problems)
    if box is None:
        return None
    polygon = []
    for x, y in zip(xs, ys, strict=True):
        polygon += [min(max(x, 0.0), float(width)), min(max(y, 0.0), float(height))]
    return {
        "category_id": class_id,
        "bbox": [box[0], box[1], box[2] - box[0], box[3] - box[1]],
        "segmentation": [polygon],
    }


def _clip(
    raw: tuple[float, float, float, float],
    width: int,
    height: int,
    coords: list[float],
    where: str,
    problems: ProblemReport,
) -> tuple[float, float, float, float] | None:
    """``raw`` (x0, y0, x1, y1 pixels) clipped to the image; None (counted) when nothing is left."""
    x0, y0, x1, y1 = raw
    box = (max(x0, 0.0), max(y0, 0.0), min(x1, float(width)), min(y1, float(height)))
    shown = f"{[round(c, 6) for c in coords[:8]]}{' ...' if len(coords) > 8 else ''}"
    if box[2] <= box[0] or box[3] <= box[1]:
        problems.add("box_entirely_outside", f"{where}: coordinates {shown} lie outside [0, 1]")
        return None
    if max(-x0, -y0, x1 - width, y1 - height) > _CLIP_TOLERANCE_PX:
        problems.add(
            "box_outside_image",
            f"{where}: coordinates {shown} outside [0, 1] clipped to the {width}x{height} image",
        )
    return box


def _class_id(token: str) -> int | None:
    try:
        return int(token)
    except ValueError:
        pass
    try:
        value = float(token)
    except ValueError:
        return None
    return int(value) if math.isfinite(value) and value.is_integer() else None


def _numbers(tokens: list[str]) -> list[float] | None:
    try:
        values = [float(t) for t in tokens]
    except ValueError:
        return None
    return values if all(math.isfinite(v) for v in values) else None
