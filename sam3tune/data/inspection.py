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
from sam3tune.data.layout import SplitFiles, find_splits
from sam3tune.data.problems import DataError
from sam3tune.data.queries import load_prompt_map, plan_queries

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
        },
        "error": None,
        "splits": [],
    }
    try:
        splits = find_splits(path, image_dir)
        prompt_map = load_prompt_map(config.prompts) if config.prompts else None
    except DataError as err:
        report.update(ok=False, error={"kind": err.kind, "message": str(err)})
        return report
    for files in splits:
        entry = _inspect_split(files, config, prompt_map, progress)
        report["ok"] = report["ok"] and entry["ok"]
        report["splits"].append(entry)
    return report


def _inspect_split(
    files: SplitFiles, config: DataConfig, prompt_map: dict[str, str] | None, progress: bool
) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "name": files.name,
        "annotation_file": str(files.annotation_file),
        "image_dir": str(files.image_dir),
        "ok": False,
        "error": None,
        "images": None,
        "annotations": None,
        "masks": None,
        "categories": None,
        "queries": None,
        "problems": [],
    }
    try:
        split = load_split(files, progress=progress, follow_symlinks=config.follow_symlinks)
    except DataError as err:
        entry["error"] = {"kind": err.kind, "message": str(err)}
        return entry
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
            lines.append(
                f"  annotations: {an['usable']} usable of {an['listed']} listed, {an['crowd']} crowd"
            )
            lines.append(f"  masks: {mk['polygon']} polygon, {mk['rle']} RLE, {mk['none']} box only")
            lines.append("  categories:")
            for cat in split["categories"]:
                state = (
                    f"-> {cat['prompt']!r}"
                    if cat["queried"]
                    else f"skipped ({cat['skipped'] or 'not queried'})"
                )
                lines.append(
                    f"    {cat['id']:>4}  {cat['name']!r:<28} {cat['instances']:>6} instances in "
                    f"{cat['images']:>5} images  {state}"
                )
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
