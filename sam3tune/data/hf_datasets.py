"""Hugging Face ``datasets`` detection datasets read as COCO splits: ``hf:ORG/NAME`` (the Hub), a
``save_to_disk`` folder, or a folder of parquet files.

The schema is the common detection layout on the Hub (one row per image):

- ``image``: an ``Image`` feature (encoded bytes, or a file inside the dataset folder);
- ``objects``: a struct of lists (or a list of structs) with, per object,
  ``bbox``: 4 numbers in pixels, COCO ``[x, y, width, height]`` (``data.hf_bbox_format=xywh``, the default)
  or ``[x0, y0, x1, y1]`` (``xyxy``); ``category``: ``ClassLabel`` ids (category names come from the
  feature) or the names themselves as strings; optional ``segmentation`` (COCO polygons or RLE),
  ``iscrowd`` / ``is_crowd`` (0 / 1) and ``id`` (annotation ids);
- optional ``image_id`` (integers, unique in a split).

Split names map to the Roboflow ones: ``train``; ``validation`` / ``valid`` / ``val`` / ``dev`` -> ``valid``;
``test``; any other name is kept.

What is loaded: the ``datasets`` library reads the source (a Hub dataset is downloaded once into its
cache, ``HF_DATASETS_CACHE``; a local folder is memory-mapped), then every split is written once as a
Roboflow COCO split (the images as files, in their own encoding, beside ``_annotations.coco.json``) under
``$SAM3TUNE_CACHE/datasets/`` (default ``~/.cache/sam3tune``), one folder per source and version
(named by a digest of the files ``datasets`` read). Rows are read one at a time, so memory does not grow
with the dataset. From there the COCO reader validates the split like any other, so every rule of
:mod:`sam3tune.data.coco`, ``data inspect``, training, evaluation and ``doctor`` apply unchanged.

A feature that does not fit the schema raises :class:`~sam3tune.data.problems.DataError` (``hf_schema``)
naming the field; a Hub dataset that cannot be had (unknown, gated, offline and not cached, ``datasets``
not installed) raises ``hf_unavailable`` saying what to do.
"""

from __future__ import annotations

import fcntl
import hashlib
import io
import json
import logging
import os
import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from PIL import Image

from sam3tune.atomic import atomic_directory
from sam3tune.data.images import oriented_size
from sam3tune.data.problems import DataError
from sam3tune.output_files import writing
from sam3tune.progress import progress_bar

if TYPE_CHECKING:
    from datasets import Dataset

log = logging.getLogger(__name__)

HUB_PREFIX = "hf:"
BboxFormat = Literal["xywh", "xyxy"]
COCO_FILE = "_annotations.coco.json"
SOURCE_FILE = "sam3tune_source.json"  # written last: a materialised folder without it is incomplete
FORMAT_VERSION = 1  # bump when the written COCO changes, so old cache folders are not reused
INSTALL_HINT = "pip install 'sam3tune[datasets]'"
SPLIT_NAMES = {
    "train": "train",
    "validation": "valid",
    "valid": "valid",
    "val": "valid",
    "dev": "valid",
    "test": "test",
}
_HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*(/[\w.-]*[A-Za-z0-9_])?")
_SPLIT_NAME = re.compile(r"[A-Za-z0-9][\w.-]*")
_CROWD_FIELDS = ("iscrowd", "is_crowd")


@dataclass(frozen=True)
class HfSource:
    """Where a Hugging Face dataset is: ``kind`` ``hub`` (``name`` = repository id), ``disk`` (a
    ``save_to_disk`` folder) or ``parquet`` (a folder of parquet files); ``text`` as the user gave it."""

    kind: Literal["hub", "disk", "parquet"]
    name: str
    text: str


def hf_source(path: str | Path | None) -> HfSource | None:
    """The Hugging Face dataset ``path`` names (``hf:ORG/NAME``, a ``save_to_disk`` folder, a folder of
    parquet files), or None when it is something else."""
    if path is None:
        return None
    text = str(path)
    if text.startswith(HUB_PREFIX):
        return HfSource("hub", text[len(HUB_PREFIX) :].strip("/"), text)
    folder = Path(path)
    if not folder.is_dir():
        return None
    if (folder / "dataset_dict.json").is_file() or (folder / "state.json").is_file():
        return HfSource("disk", str(folder), text)
    if (folder / COCO_FILE).is_file():
        return None
    if any(folder.glob("*.parquet")) or any(folder.glob("*/*.parquet")):
        return HfSource("parquet", str(folder), text)
    return None


def hf_split_files(source: HfSource, bbox_format: BboxFormat = "xywh") -> list[tuple[str, Path, Path]]:
    """``(split name, COCO annotation file, image folder)`` of every split of ``source``, materialised as
    Roboflow COCO split folders in the cache (written the first time, reused after; module docstring)."""
    if bbox_format not in ("xywh", "xyxy"):
        raise DataError("hf_schema", f"data.hf_bbox_format={bbox_format!r}: must be xywh or xyxy")
    splits = _load(source)
    digest = _digest(source, splits, bbox_format)
    folder = cache_root() / "datasets" / f"{_slug(source)}-{digest}"
    with _locked(folder):
        if not (folder / SOURCE_FILE).is_file():
            _materialise(source, splits, bbox_format, folder)
    record = json.loads((folder / SOURCE_FILE).read_text())
    return [(name, folder / name / COCO_FILE, folder / name) for name in record["splits"]]


def cache_root() -> Path:
    """``$SAM3TUNE_CACHE``, else ``$XDG_CACHE_HOME/sam3tune``, else ``~/.cache/sam3tune``."""
    if os.environ.get("SAM3TUNE_CACHE"):
        return Path(os.environ["SAM3TUNE_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "sam3tune"


# ---- reading the source ----


def _datasets_module():
    try:
        import datasets
    except ImportError as err:
        raise DataError(
            "hf_unavailable",
            f"reading Hugging Face datasets needs the `datasets` package: {INSTALL_HINT} "
            "(or convert the dataset to COCO / YOLO files)",
        ) from err
    return datasets


def _load(source: HfSource) -> dict[str, Dataset]:
    """The splits of ``source`` as ``datasets.Dataset`` objects (memory-mapped), by their own names."""
    datasets = _datasets_module()
    if source.kind == "disk":
        loaded = datasets.load_from_disk(source.name)
        found = (
            dict(loaded) if isinstance(loaded, datasets.DatasetDict) else {_disk_split_name(source): loaded}
        )
    elif source.kind == "parquet":
        files = _parquet_files(Path(source.name))
        found = dict(datasets.load_dataset("parquet", data_files=files))
    else:
        found = _load_hub(datasets, source)
    if not found:
        raise DataError("empty_split", f"{source.text}: the dataset has no split")
    return found


def _disk_split_name(source: HfSource) -> str:
    """A single ``Dataset`` saved to disk: its ``split`` from ``dataset_info.json``, else ``train``."""
    info = Path(source.name) / "dataset_info.json"
    try:
        return str(json.loads(info.read_text()).get("split") or "train")
    except (OSError, ValueError):
        return "train"


def _parquet_files(folder: Path) -> dict[str, list[str]]:
    """Split name -> parquet files: the Hub's layout ``[data/]SPLIT-00000-of-00001.parquet``, a folder per
    split (``train/*.parquet``), or one file per split (``train.parquet``)."""
    files: dict[str, list[str]] = {}
    for path in sorted(folder.glob("*.parquet")) + sorted(folder.glob("*/*.parquet")):
        stem = path.stem.split("-")[0]
        name = stem if path.parent == folder or path.parent.name == "data" else path.parent.name
        files.setdefault(name, []).append(str(path))
    return files


def _load_hub(datasets, source: HfSource) -> dict[str, Dataset]:
    """The Hub dataset ``source.name`` through ``datasets.load_dataset``, its failures as errors that say
    what to do (the model loader's wording, ``sam3tune.model.hub``)."""
    name = source.name
    if not _HUB_ID.fullmatch(name) or ".." in name:
        raise DataError(
            "hf_unavailable", f"{source.text}: not a Hub dataset id (hf:ORG/NAME, e.g. hf:cppe-5)"
        )
    page = f"https://huggingface.co/datasets/{name}"
    local = "or pass a local folder written by save_to_disk, or a folder of parquet files"
    try:
        return dict(datasets.load_dataset(name))
    except Exception as err:  # datasets and huggingface_hub raise many classes; sorted out below
        text = f"{type(err).__name__}: {err}"
        offline = os.environ.get("HF_DATASETS_OFFLINE", os.environ.get("HF_HUB_OFFLINE", "0")) not in (
            "",
            "0",
            "false",
            "False",
        )
        if "gated" in text.lower():
            raise DataError(
                "hf_unavailable",
                f"{name} is a gated dataset: accept its conditions on {page} with your Hugging Face account, "
                f"then log in (`hf auth login`, or set HF_TOKEN), {local}. ({text})",
            ) from err
        if (
            offline
            or isinstance(err, ConnectionError)
            or "offline" in text.lower()
            or "reach" in text.lower()
        ):
            cause = "HF_DATASETS_OFFLINE / HF_HUB_OFFLINE is set" if offline else "the Hub cannot be reached"
            save = f"datasets.load_dataset('{name}').save_to_disk('{name.split('/')[-1]}')"
            raise DataError(
                "hf_unavailable",
                f"{cause} and {name} is not in the datasets cache. On a connected machine save it "
                f"(`python -c \"import datasets; {save}\"`) and copy the folder here, {local}. ({text})",
            ) from err
        if type(err).__name__ in ("DatasetNotFoundError", "RepositoryNotFoundError", "FileNotFoundError"):
            raise DataError(
                "hf_unavailable",
                f"no dataset {name!r} on the Hugging Face Hub: check the id for a typo; a private dataset "
                f"also needs `hf auth login`; {local}. ({text})",
            ) from err
        raise DataError(
            "hf_unavailable", f"{source.text}: the datasets library could not load it: {text}"
        ) from err


def _digest(source: HfSource, splits: dict[str, Dataset], bbox_format: str) -> str:
    """A digest of what ``datasets`` read (its cache files: path, size, modification time), the box format
    and :data:`FORMAT_VERSION`: a new version of the source gets a new folder."""
    parts: list[Any] = [FORMAT_VERSION, bbox_format, source.kind, source.name]
    for name in sorted(splits):
        files = [f["filename"] for f in splits[name].cache_files]
        stats = [(f, os.path.getsize(f), os.stat(f).st_mtime_ns) for f in files if os.path.exists(f)]
        parts.append([name, stats or splits[name]._fingerprint])
    return hashlib.sha256(json.dumps(parts, default=str).encode()).hexdigest()[:16]


def _slug(source: HfSource) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", Path(source.name).name if source.kind != "hub" else source.name)[
        :60
    ]


@contextmanager
def _locked(folder: Path) -> Iterator[None]:
    """Hold ``<folder>.lock`` (flock): one process writes a cache folder, the others wait and reuse it."""
    folder.parent.mkdir(parents=True, exist_ok=True)
    with open(folder.with_name(folder.name + ".lock"), "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


# ---- writing COCO splits ----


def _materialise(source: HfSource, splits: dict[str, Dataset], bbox_format: BboxFormat, folder: Path) -> None:
    names = _split_folders(source, list(splits))
    with writing(folder), atomic_directory(folder) as staging:
        counts = {}
        for original, name in names.items():
            counts[name] = _write_split(source, original, splits[original], bbox_format, staging / name)
        record = {
            "source": source.text,
            "kind": source.kind,
            "bbox_format": bbox_format,
            "format_version": FORMAT_VERSION,
            "splits": list(names.values()),
            "original_split_names": names,
            "counts": counts,
        }
        (staging / SOURCE_FILE).write_text(json.dumps(record, indent=2))
    log.info(
        "%s: written as COCO splits in %s (%s)",
        source.text,
        folder,
        ", ".join(f"{n}: {c['images']} images, {c['annotations']} objects" for n, c in counts.items()),
    )


def _split_folders(source: HfSource, names: list[str]) -> dict[str, str]:
    """Original split name -> folder name (train / valid / test, others kept), refusing clashes and names
    that are no plain folder name."""
    result: dict[str, str] = {}
    order = {"train": 0, "valid": 1, "test": 2}
    for name in sorted(names, key=lambda n: (order.get(SPLIT_NAMES.get(n.lower(), n), 3), n)):
        folder = SPLIT_NAMES.get(name.lower(), name)
        if not _SPLIT_NAME.fullmatch(folder):
            raise DataError("hf_schema", f"{source.text}: split name {name!r} is not a plain folder name")
        clash = [n for n, f in result.items() if f == folder]
        if clash:
            raise DataError(
                "hf_schema", f"{source.text}: splits {clash[0]!r} and {name!r} both map to {folder!r}"
            )
        result[name] = folder
    return result


def _write_split(source: HfSource, split: str, dataset: Dataset, bbox_format: BboxFormat, out: Path) -> dict:
    where = f"{source.text} split {split!r}"
    schema = _schema(dataset, where)
    datasets = _datasets_module()
    rows = dataset.cast_column("image", datasets.Image(decode=False)) if schema.image_decodes else dataset
    out.mkdir(parents=True)
    categories = schema.category_names or _string_categories(dataset, schema, where)
    ids = {name: i for i, name in categories.items()}
    images, annotations = [], []
    image_ids = _image_ids(dataset, where)
    for index, row in enumerate(progress_bar(rows, total=len(rows), desc=f"writing {where}", leave=False)):
        images.append(_write_image(row["image"], image_ids[index], index, source, out, where))
        for obj in _objects(row.get("objects"), where, index):
            annotations.append(_annotation(obj, image_ids[index], categories, ids, bbox_format, where, index))
    _number_annotations(annotations)
    _check_box_format(annotations, images, bbox_format, where)
    coco = {
        "images": images,
        "annotations": annotations,
        "categories": [{"id": i, "name": n, "supercategory": ""} for i, n in sorted(categories.items())],
    }
    (out / COCO_FILE).write_text(json.dumps(coco))
    return {"images": len(images), "annotations": len(annotations)}


@dataclass(frozen=True)
class _Schema:
    image_decodes: bool
    category_names: dict[int, str] | None  # ClassLabel names; None: categories are strings


def _schema(dataset: Dataset, where: str) -> _Schema:
    """Check the features against the detection schema (module docstring); the error names the field."""
    datasets = _datasets_module()
    features = dataset.features
    columns = ", ".join(features) or "none"
    if "image" not in features:
        raise DataError("hf_schema", f"{where}: no column 'image' (columns: {columns})")
    if not isinstance(features["image"], datasets.Image):
        raise DataError(
            "hf_schema",
            f"{where}: column 'image' is {_describe(features['image'])}, expected an Image feature",
        )
    if "objects" not in features:
        raise DataError(
            "hf_schema", f"{where}: no column 'objects' with the boxes and categories (columns: {columns})"
        )
    fields = _struct_fields(features["objects"])
    if fields is None:
        raise DataError(
            "hf_schema",
            f"{where}: column 'objects' is {_describe(features['objects'])}, expected a struct of lists "
            "(or a list of structs) with 'bbox' and 'category'",
        )
    for name in ("bbox", "category"):
        if name not in fields:
            raise DataError(
                "hf_schema",
                f"{where}: 'objects' has no field {name!r} (fields: {', '.join(fields) or 'none'})",
            )
    category = _leaf(fields["category"])
    if isinstance(category, datasets.ClassLabel):
        return _Schema(features["image"].decode, dict(enumerate(category.names)))
    if isinstance(category, datasets.Value) and category.dtype in ("string", "large_string"):
        return _Schema(features["image"].decode, None)
    raise DataError(
        "hf_schema",
        f"{where}: 'objects.category' is {_describe(fields['category'])}: category names are needed, as a "
        "ClassLabel feature (ids with names) or as strings; cast the column, e.g. "
        "dataset.cast_column('objects', ...) with category=ClassLabel(names=[...])",
    )


def _struct_fields(feature: Any) -> dict[str, Any] | None:
    """The fields of ``objects``: a dict of features (struct of lists), a ``Sequence`` of a dict, or a
    ``List`` of a dict (list of structs)."""
    if isinstance(feature, dict):
        return feature
    inner = getattr(feature, "feature", None)
    return inner if isinstance(inner, dict) else None


def _leaf(feature: Any) -> Any:
    """The feature inside (nested) ``Sequence`` / ``List`` wrappers."""
    while hasattr(feature, "feature") and not isinstance(feature, dict):
        feature = feature.feature
    return feature


def _describe(feature: Any) -> str:
    return f"{type(feature).__name__}({getattr(feature, 'dtype', '')})".replace("()", "")


def _string_categories(dataset: Dataset, schema: _Schema, where: str) -> dict[int, str]:
    """Category names given as strings: ids 0, 1, ... in sorted name order (one pass over ``objects``)."""
    names: set[str] = set()
    for index, row in enumerate(dataset.select_columns(["objects"])):
        for obj in _objects(row["objects"], where, index):
            if not isinstance(obj.get("category"), str) or not obj["category"].strip():
                raise DataError(
                    "hf_schema", f"{where} row {index}: objects.category {obj.get('category')!r} is no name"
                )
            names.add(obj["category"])
    return dict(enumerate(sorted(names)))


def _image_ids(dataset: Dataset, where: str) -> list[int]:
    """The ``image_id`` column when it holds unique integers, else 1, 2, ... in row order."""
    if "image_id" not in dataset.features:
        return list(range(1, len(dataset) + 1))
    ids = dataset["image_id"]
    if all(isinstance(i, int) and not isinstance(i, bool) for i in ids):
        seen: dict[int, int] = {}
        for row, image_id in enumerate(ids):
            if image_id in seen:
                raise DataError(
                    "hf_schema", f"{where}: image_id {image_id} appears in rows {seen[image_id]} and {row}"
                )
            seen[image_id] = row
        return list(ids)
    raise DataError("hf_schema", f"{where}: column 'image_id' must hold integers (got {ids[:3]!r} ...)")


def _objects(value: Any, where: str, index: int) -> list[dict[str, Any]]:
    """The objects of one row as a list of dicts (from a struct of lists or a list of structs)."""
    if value is None:
        return []
    if isinstance(value, list):
        if all(isinstance(v, dict) for v in value):
            return value
        raise DataError("hf_schema", f"{where} row {index}: 'objects' is a list of {type(value[0]).__name__}")
    if not isinstance(value, dict):
        raise DataError("hf_schema", f"{where} row {index}: 'objects' is a {type(value).__name__}")
    lengths = {k: len(v) for k, v in value.items() if isinstance(v, list)}
    count = lengths.get("bbox", 0)
    uneven = [k for k, n in lengths.items() if n != count]
    if uneven:
        raise DataError(
            "hf_schema",
            f"{where} row {index}: objects.{uneven[0]} has {lengths[uneven[0]]} entries but objects.bbox "
            f"has {count}",
        )
    return [{k: v[i] for k, v in value.items() if isinstance(v, list)} for i in range(count)]


def _write_image(value: Any, image_id: int, index: int, source: HfSource, out: Path, where: str) -> dict:
    """Write row ``index``'s image as ``<index:08d>.<format>`` in its own encoding (so a message naming the
    file names the row); its COCO ``images`` entry (size after EXIF orientation; an undecodable image gets
    size 1 x 1 and is reported by the COCO reader)."""
    data = value.get("bytes") if isinstance(value, dict) else None
    path = value.get("path") if isinstance(value, dict) else None
    if data is None and path:
        data = _local_image(Path(path), source, where, index)
    if data is None:
        raise DataError("hf_schema", f"{where} row {index}: the image has neither bytes nor a file")
    suffix, width, height = ".bin", 1, 1
    try:
        with Image.open(io.BytesIO(data)) as img:
            width, height = oriented_size(img)
            suffix = "." + {"JPEG": "jpg", "TIFF": "tif"}.get(img.format or "", (img.format or "bin").lower())
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError):
        pass  # the COCO reader decodes every image again and counts it (image_unreadable)
    name = f"{index:08d}{suffix}"
    (out / name).write_bytes(data)
    return {"id": image_id, "file_name": name, "width": width, "height": height}


def _local_image(path: Path, source: HfSource, where: str, index: int) -> bytes:
    """The bytes of an image the dataset names by file path: only a file inside a local source folder."""
    if source.kind == "hub":
        raise DataError("hf_schema", f"{where} row {index}: the image is a file path ({path}), not bytes")
    folder = os.path.realpath(source.name)
    full = os.path.realpath(Path(source.name) / path)
    if os.path.commonpath([folder, full]) != folder:
        raise DataError(
            "path_escapes_root",
            f"{where} row {index}: image file {path} is outside the dataset folder {folder}",
        )
    try:
        return Path(full).read_bytes()
    except OSError as err:
        raise DataError(
            "hf_schema", f"{where} row {index}: cannot read the image file {full}: {err}"
        ) from err


def _annotation(
    obj: dict[str, Any],
    image_id: int,
    categories: dict[int, str],
    ids: dict[str, int],
    bbox_format: BboxFormat,
    where: str,
    index: int,
) -> dict[str, Any]:
    """One object as a COCO annotation; values the COCO reader checks (box, mask, crowd) pass as given."""
    category = obj.get("category")
    if isinstance(category, str):
        category = ids.get(category, category)
    elif isinstance(category, int) and category not in categories and category >= 0:
        raise DataError(
            "hf_schema",
            f"{where} row {index}: objects.category {category} is not among the {len(categories)} "
            "class names",
        )
    bbox = obj.get("bbox")
    if (
        bbox_format == "xyxy"
        and isinstance(bbox, (list, tuple))
        and len(bbox) == 4
        and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in bbox)
    ):
        bbox = [bbox[0], bbox[1], bbox[2] - bbox[0], bbox[3] - bbox[1]]
    ann = {"id": obj.get("id"), "image_id": image_id, "category_id": category, "bbox": bbox}
    if obj.get("segmentation") not in (None, [], {}):
        ann["segmentation"] = obj["segmentation"]
    crowd = next((obj[f] for f in _CROWD_FIELDS if f in obj and obj[f] is not None), 0)
    ann["iscrowd"] = int(crowd) if isinstance(crowd, bool) else crowd
    return ann


def _number_annotations(annotations: list[dict[str, Any]]) -> None:
    """Keep the dataset's annotation ids when every one is a unique integer, else number them 1, 2, ..."""
    given = [a["id"] for a in annotations]
    if all(isinstance(i, int) and not isinstance(i, bool) for i in given) and len(set(given)) == len(given):
        return
    for number, ann in enumerate(annotations, start=1):
        ann["id"] = number


def _check_box_format(
    annotations: list[dict[str, Any]], images: list[dict[str, Any]], bbox_format: BboxFormat, where: str
) -> None:
    """Refuse boxes that plainly use the other format: most of them leave the image as written while all of
    them fit read the other way (``data.hf_bbox_format``)."""
    sizes = {i["id"]: (i["width"], i["height"]) for i in images}
    boxes = [
        (a["bbox"], sizes[a["image_id"]])
        for a in annotations
        if isinstance(a["bbox"], list)
        and len(a["bbox"]) == 4
        and all(isinstance(v, (int, float)) for v in a["bbox"])
    ]
    if len(boxes) < 3:  # too few to tell a format from a few boxes that overflow their image
        return

    def fits(x: float, y: float, w: float, h: float, size: tuple[int, int]) -> bool:
        return w > 0 and h > 0 and x >= -1 and y >= -1 and x + w <= size[0] + 1 and y + h <= size[1] + 1

    as_written = sum(fits(*b, s) for b, s in boxes)
    if bbox_format == "xywh":
        other = sum(fits(b[0], b[1], b[2] - b[0], b[3] - b[1], s) for b, s in boxes)
    else:  # written as xyxy: the boxes were already turned into xywh
        other = sum(fits(b[0], b[1], b[2] + b[0], b[3] + b[1], s) for b, s in boxes)
    if as_written < len(boxes) / 2 and other == len(boxes):
        correct = "xyxy" if bbox_format == "xywh" else "xywh"
        raise DataError(
            "hf_schema",
            f"{where}: objects.bbox read as {bbox_format}: {len(boxes) - as_written} of {len(boxes)} boxes "
            f"do not fit their image, but all fit as {correct}: set data.hf_bbox_format={correct}",
        )
