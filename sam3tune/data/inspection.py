"""``sam3tune data inspect``: what the loader makes of a dataset, as text or one stable JSON document.

The JSON schema (``schema_version`` 1) is documented in ``docs/data.md``; fields are only ever
added, never renamed or removed, without bumping ``schema_version``.
"""

from __future__ import annotations

import dataclasses
from collections import Counter
from pathlib import Path
from typing import Any

from sam3tune.data.coco import CocoSplit, load_split
from sam3tune.data.config import DataConfig
from sam3tune.data.dataset import count_exemplar_queries
from sam3tune.data.layout import SplitFiles, find_splits, split_aliases
from sam3tune.data.problems import DataError
from sam3tune.data.queries import Negatives, load_prompt_map, negative_count, plan_queries
from sam3tune.data.semantic import (
    is_semantic_dataset,
    load_semantic_split,
    refuse_instance_options,
    semantic_splits,
)
from sam3tune.data.shots import sample_shots
from sam3tune.data.tiling import tile_plan
from sam3tune.errors import describe_os_error

SCHEMA_VERSION = 1


def inspect_dataset(
    path: str | Path,
    config: DataConfig | None = None,
    image_dir: str | Path | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """The inspect report of every split at ``path`` (see ``docs/data.md`` for the schema).

    Query settings (negatives, cap, prompt map, unused categories) come from ``config``.
    """
    config = config or DataConfig()
    report: dict[str, Any] = {
        "schema_version": SCHEMA_VERSION,
        "path": str(path),
        "ok": True,
        "settings": {
            "negatives": config.negatives,
            "max_objects_per_query": config.max_objects_per_query,
            "keep_unused_categories": config.keep_unused_categories,
            "prompts": str(config.prompts) if config.prompts else None,
            "exemplars": dataclasses.asdict(config.exemplars),
            "follow_symlinks": config.follow_symlinks,
            "tiling": dataclasses.asdict(config.tiling),
            "shots": config.shots,
            "shots_seed": config.shots_seed,
            "shots_rule": config.shots_rule,
        },
        "error": None,
        "splits": [],
    }
    if is_semantic_dataset(path):
        try:
            refuse_instance_options(dataclasses.replace(config, root=Path(path)))
        except DataError as err:
            report.update(ok=False, error={"kind": err.kind, "message": str(err)})
            return report
        for name in semantic_splits(path):
            entry = _inspect_semantic_split(Path(path), name, config.negatives, config.follow_symlinks)
            report["ok"] = report["ok"] and entry["ok"]
            report["splits"].append(entry)
        if not report["splits"]:
            report.update(
                ok=False, error={"kind": "split_missing", "message": f"{path}: no split with images/"}
            )
        return report
    try:
        splits = find_splits(path, image_dir, config.hf_bbox_format)
        prompt_map = load_prompt_map(config.prompts) if config.prompts else None
    except DataError as err:
        report.update(ok=False, error={"kind": err.kind, "message": str(err)})
        return report
    except OSError as err:  # a name the filesystem refuses, a folder that cannot be read
        message = describe_os_error(err, path, "read")
        report.update(ok=False, error={"kind": "layout_invalid", "message": message})
        return report
    for files in splits:
        sampled = config.shots is not None and (
            len(splits) == 1 or files.name in {*split_aliases(config.train), Path(config.train).stem}
        )
        entry = _inspect_split(files, config, prompt_map, progress, sampled)
        report["ok"] = report["ok"] and entry["ok"]
        report["splits"].append(entry)
    return report


def _empty_entry(name: str, annotation_file: Path, image_dir: Path) -> dict[str, Any]:
    """A split's entry before anything is known about it (every count null)."""
    return {
        "name": name,
        "annotation_file": str(annotation_file),
        "image_dir": str(image_dir),
        "ok": False,
        "error": None,
        "images": None,
        "annotations": None,
        "masks": None,
        "categories": None,
        "queries": None,
        "tiling": None,
        "problems": [],
        "shots": None,
    }


def _inspect_split(
    files: SplitFiles,
    config: DataConfig,
    prompt_map: dict[str, str] | None,
    progress: bool,
    sampled: bool = False,
) -> dict[str, Any]:
    """The entry of one split; ``sampled``: it is the training split and ``config.shots`` is set, so its
    counts are those of the K-shot sample training uses (``shots`` says what was taken)."""
    entry = _empty_entry(files.name, files.annotation_file, files.image_dir)
    try:
        split = load_split(files, progress=progress, follow_symlinks=config.follow_symlinks)
    except DataError as err:
        entry["error"] = {"kind": err.kind, "message": str(err)}
        return entry
    if sampled:
        split, sample = sample_shots(split, config.shots, config.shots_seed, config.shots_rule)
        entry["shots"] = sample.as_dict(split.categories)
        entry["shots"]["line"] = sample.describe()
    entry.update(_split_counts(split))
    entry["problems"] = split.problems.as_list()
    try:
        plan = plan_queries(
            split,
            negatives=config.negatives,
            max_objects_per_query=config.max_objects_per_query,
            prompt_map=prompt_map,
            keep_unused_categories=config.keep_unused_categories,
        )
    except DataError as err:
        entry["error"] = {"kind": err.kind, "message": str(err)}
        return entry
    entry["ok"] = True
    entry["problems"] = plan.problems.as_list()
    entry["images"]["with_queries"] = len(plan.images)
    entry["annotations"]["targets"] = plan.num_targets
    entry["queries"] = {
        "positive": plan.num_positive,
        "negative": plan.num_negative,
        "negatives": plan.negatives,
        "exemplar": count_exemplar_queries(plan, config),
    }
    if config.tiling.enabled:
        tiled = tile_plan(plan, config.tiling)
        entry["problems"] = tiled.problems.as_list()
        entry["tiling"] = {
            **dataclasses.asdict(tiled.tiling),
            "queries": {"positive": tiled.num_positive, "negative": tiled.num_negative},
        }
    for category in entry["categories"]:
        query = plan.categories.get(category["id"])
        category["prompt"] = query.prompt if query else None
        category["queried"] = query is not None
        category["skipped"] = plan.skipped_categories.get(category["id"])
    return entry


def _split_counts(split: CocoSplit) -> dict[str, Any]:
    objects = [o for objs in split.objects.values() for o in objs]
    targets = [o for o in objects if not o.iscrowd]
    instances = Counter(o.category_id for o in targets)
    images_with = Counter(
        cat for objs in split.objects.values() for cat in {o.category_id for o in objs if not o.iscrowd}
    )
    return {
        "images": {"listed": split.images_listed, "usable": len(split.images), "with_queries": None},
        "annotations": {
            "listed": split.annotations_listed,
            "usable": len(objects),
            "crowd": len(objects) - len(targets),
            "targets": None,
        },
        "masks": {
            "polygon": sum(isinstance(o.segmentation, list) for o in targets),
            "rle": sum(isinstance(o.segmentation, dict) for o in targets),
            "none": sum(o.segmentation is None for o in targets),
        },
        "categories": [
            {
                "id": cat_id,
                "name": name,
                "prompt": None,
                "instances": instances[cat_id],
                "images": images_with[cat_id],
                "queried": False,
                "skipped": None,
            }
            for cat_id, name in sorted(split.categories.items())
        ],
    }


def _inspect_semantic_split(
    root: Path, split: str, negatives: Negatives, follow_symlinks: bool = False
) -> dict[str, Any]:
    """The ``data inspect`` entry of one semantic split (the instance report's keys; ``annotations``
    and ``masks`` are null, a class's ``instances`` too; ``images`` counts the images showing it;
    queries as training asks them with ``negatives``)."""
    entry = _empty_entry(split, root / split / "labels", root / split / "images")
    try:
        loaded = load_semantic_split(root, split, follow_symlinks)
    except DataError as err:
        entry["error"] = {"kind": err.kind, "message": str(err)}
        return entry
    showing = dict.fromkeys(loaded.classes, 0)
    positive = negative = 0
    for image in loaded.images:
        present = image.present
        for c in present:
            showing[c] += 1
        positive += len(present)
        negative += negative_count(len(loaded.classes) - len(present), negatives)
    listed = len(loaded.images) + sum(
        loaded.problems[k]
        for k in (
            "label_map_missing",
            "image_unreadable",
            "image_size_mismatch",
            "image_truncated",
            "image_corrupt",
            "image_outside_folder",
            "label_map_all_ignored",
        )
    )
    entry.update(
        ok=True,
        images={"listed": listed, "usable": len(loaded.images), "with_queries": len(loaded.images)},
        categories=[
            {
                "id": c,
                "name": name,
                "prompt": loaded.prompts[c],
                "instances": None,
                "images": showing[c],
                "queried": True,
                "skipped": None,
            }
            for c, name in sorted(loaded.classes.items())
        ],
        queries={"positive": positive, "negative": negative, "negatives": negatives, "exemplar": 0},
        problems=loaded.problems.as_list(),
    )
    return entry


def format_report(report: dict[str, Any]) -> str:
    """The report as text for people."""
    lines = [f"dataset {report['path']}"]
    if report["error"]:
        return "\n".join([*lines, f"  ERROR ({report['error']['kind']}): {report['error']['message']}"])
    settings = report["settings"]
    lines.append(
        f"  negatives: {settings['negatives']}, max objects per query: {settings['max_objects_per_query']}"
    )
    for split in report["splits"]:
        lines.append(f"\nsplit {split['name']}  ({split['annotation_file']})")
        if split["images"]:
            im, an, mk = split["images"], split["annotations"], split["masks"]
            lines.append(
                f"  images: {im['usable']} usable of {im['listed']} listed"
                + (f", {im['with_queries']} with queries" if im["with_queries"] is not None else "")
            )
            if an is not None:
                lines.append(
                    f"  annotations: {an['usable']} usable of {an['listed']} listed, {an['crowd']} crowd"
                )
                lines.append(f"  masks: {mk['polygon']} polygon, {mk['rle']} RLE, {mk['none']} box only")
            else:
                lines.append("  label maps (semantic): one query per image and class")
            lines.append("  categories:")
            for cat in split["categories"]:
                state = (
                    f"-> {cat['prompt']!r}"
                    if cat["queried"]
                    else f"skipped ({cat['skipped'] or 'not queried'})"
                )
                count = f"{cat['instances']:>6} instances in" if cat["instances"] is not None else "shown in"
                lines.append(
                    f"    {cat['id']:>4}  {cat['name']!r:<28} {count} {cat['images']:>5} images  {state}"
                )
        if split.get("shots"):
            lines.append(f"  {split['shots']['line']}")
        if split["queries"]:
            q = split["queries"]
            lines.append(
                f"  queries: {q['positive']} positive, {q['negative']} negative (negatives: {q['negatives']})"
            )
            if settings["exemplars"]["probability"] > 0:
                lines.append(
                    f"  exemplar queries: {q['exemplar']} of the positives in epoch 0 with seed 0 "
                    f"(probability {settings['exemplars']['probability']}, drawn anew each epoch)"
                )
        if split.get("tiling"):
            t = split["tiling"]
            lines.append(
                f"  tiles ({t['size']} px, overlap {t['overlap']:g}): {t['tiles']} from {t['images_tiled']} "
                f"images ({t['tiles_with_objects']} with objects, {t['empty_tiles_kept']} empty kept, "
                f"{t['empty_tiles_left_out']} empty left out), {t['images_whole']} images whole"
            )
            lines.append(
                f"  objects on tiles: {t['object_tiles_kept']} targets ({t['object_tiles_clipped']} clipped "
                f"at a border), {t['object_tiles_dropped']} dropped (< {t['min_visible']:g} visible), "
                f"{t['objects_lost']} a target on no tile; tile queries: {t['queries']['positive']} "
                f"positive, {t['queries']['negative']} negative"
            )
        if split["problems"]:
            lines.append("  problems:")
            for problem in split["problems"]:
                lines.append(f"    {problem['count']:>6} x {problem['message']} [{problem['kind']}]")
                lines.extend(f"             e.g. {example}" for example in problem["examples"][:3])
        elif not split["error"]:
            lines.append("  problems: none")
        if split["error"]:
            lines.append(f"  ERROR ({split['error']['kind']}): {split['error']['message']}")
    lines.append("\nOK" if report["ok"] else "\nNOT USABLE: fix the errors above")
    return "\n".join(lines)
