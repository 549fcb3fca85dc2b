"""Evaluation reports: a JSON file with every number and a Markdown summary, optionally side by
side with a baseline model (``sam3tune eval baseline=...``)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from sam3tune.eval.evaluate import EvalMetrics
from sam3tune.eval.verdict import Verdict
from sam3tune.output_files import write_text_atomic

_IOU_NAMES = {"bbox": "box", "segm": "mask"}


def report_dict(
    metrics: EvalMetrics,
    label: str,
    baseline: EvalMetrics | None = None,
    baseline_label: str = "baseline",
    context: dict[str, Any] | None = None,
    verdict: Verdict | None = None,
) -> dict[str, Any]:
    """The JSON report: ``{"context", "model": {"label", "metrics"}, "baseline"?: {...}, "verdict"?: {...}}``
    (``verdict``: ``metric``, ``mode``, ``zero_shot``, ``tuned``, ``change``, ``better``, ``line``)."""
    out: dict[str, Any] = {
        "context": dict(context or {}),
        "model": {"label": label, "summary": metrics.summary(), "metrics": metrics.to_dict()},
    }
    if baseline is not None:
        out["baseline"] = {
            "label": baseline_label,
            "summary": baseline.summary(),
            "metrics": baseline.to_dict(),
        }
    if verdict is not None:
        out["verdict"] = {
            "metric": verdict.metric,
            "mode": verdict.mode,
            "zero_shot": verdict.zero_shot,
            "tuned": verdict.tuned,
            "change": verdict.change,
            "better": verdict.better,
            "line": verdict.line(),
        }
    return out


def markdown_report(
    metrics: EvalMetrics,
    label: str,
    baseline: EvalMetrics | None = None,
    baseline_label: str = "baseline",
    context: dict[str, Any] | None = None,
    verdict: Verdict | None = None,
) -> str:
    """A Markdown summary; numbers are percentages (x100), ``-`` where undefined. ``verdict``: the
    baseline is the starting model of the evaluated run; its line opens the summary."""
    runs = [(baseline_label, baseline), (label, metrics)] if baseline is not None else [(label, metrics)]
    lines = [f"# Evaluation: {label}", ""]
    for key, value in (context or {}).items():
        lines.append(f"- {key}: {value}")
    lines += [
        f"- images: {metrics.images}, categories: {metrics.categories}, "
        f"queries (image x prompt): {metrics.queries}, detections: {metrics.detections}",
        f"- cgF1 counts detections with score >= {_cgf1_threshold(metrics)}; a negative prompt fires "
        f"with a detection >= {metrics.specificity.score_threshold}",
    ]
    lines += [f"- note: {note}" for note in metrics.notes]
    lines += ["", "## Summary", ""]
    if verdict is not None:
        lines += [f"**{verdict.line()}**", ""]
    header = ["metric", *(name for name, _ in runs)]
    if baseline is not None:
        header.append("change")
    rows = []
    for key in metrics.summary():
        values = [m.summary().get(key) for _, m in runs]
        row = [_metric_name(key), *(percent(v) for v in values)]
        if baseline is not None:
            row.append(percent_change(values[0], values[1]))
        rows.append(row)
    lines += markdown_table(header, rows)

    lines += ["", "## Per category", ""]
    columns = [(f"{_IOU_NAMES[t]} {k}", t, k) for t in metrics.coco for k in ("AP", "AP50")]
    header = ["category"]
    for title, _, _ in columns:
        header += [f"{title} ({name})" for name, _ in runs]
    header += [f"false-fire rate ({name})" for name, _ in runs]
    rows = []
    for category in metrics.specificity.per_category:
        row = [category]
        for _, iou_type, key in columns:
            row += [percent(_category_ap(m, iou_type, category, key)) for _, m in runs]
        row += [percent(m.specificity.per_category[category]["false_fire_rate"]) for _, m in runs]
        rows.append(row)
    lines += markdown_table(header, rows)

    if metrics.exemplar is not None:
        lines += ["", *_exemplar_section(runs)]

    lines += ["", "## Prompt specificity (negative prompts)", ""]
    header = ["category", "negative images", *(f"fired ({name})" for name, _ in runs)]
    header += [f"false detections ({name})" for name, _ in runs]
    rows = []
    for category, counts in metrics.specificity.per_category.items():
        row = [category, str(counts["negative_images"])]
        row += [str(m.specificity.per_category[category]["fired_images"]) for _, m in runs]
        row += [str(m.specificity.per_category[category]["false_detections"]) for _, m in runs]
        rows.append(row)
    lines += markdown_table(header, rows)
    return "\n".join(lines) + "\n"


def _exemplar_section(runs: list[tuple[str, EvalMetrics]]) -> list[str]:
    """Per category: text-prompt AP50 next to the exemplar protocol's AP50 (kept / others only)."""
    protocol = runs[-1][1].exemplar
    text = "category text + box" if protocol.keep_text else '"visual" + box'
    lines = [
        "## Exemplar prompts (one of its own boxes per image and category)",
        "",
        f"- {protocol.queries} (image, category) queries, prompt: {text}, exemplar chosen with seed "
        f"{protocol.seed}; *exemplar*: AP against all objects; *others*: the exemplar's object left out of "
        f"the ground truth and its detections ({protocol.excluded} here) out of the predictions",
        "",
    ]
    header, columns = ["category"], []
    for iou_type in protocol.kept:
        for kind in ("text", "exemplar", "others"):
            header += [f"{_IOU_NAMES[iou_type]} AP50 {kind} ({name})" for name, _ in runs]
            columns.append((iou_type, kind))
    rows = []
    for category in runs[-1][1].specificity.per_category:
        row = [category]
        row += [percent(_ap50(m, iou_type, category, kind)) for iou_type, kind in columns for _, m in runs]
        rows.append(row)
    return lines + markdown_table(header, rows)


def _ap50(metrics: EvalMetrics, iou_type: str, category: str, kind: str) -> float | None:
    """Per-category AP50 of the text prompts (``kind`` "text") or of the exemplar protocol
    ("exemplar": exemplar object kept, "others": left out)."""
    if kind == "text":
        return _category_ap(metrics, iou_type, category, "AP50")
    if metrics.exemplar is None or iou_type not in metrics.exemplar.kept:
        return None
    figures = metrics.exemplar.kept if kind == "exemplar" else metrics.exemplar.others
    return figures[iou_type].per_category.get(category, {}).get("AP50")


#: the report files of ``sam3tune eval`` (``write_reports`` with the default stem)
REPORT_JSON, REPORT_MD = "eval.json", "eval.md"


def write_reports(
    out_dir: str | Path,
    metrics: EvalMetrics,
    label: str,
    baseline: EvalMetrics | None = None,
    baseline_label: str = "baseline",
    context: dict[str, Any] | None = None,
    stem: str = "eval",
    verdict: Verdict | None = None,
) -> tuple[Path, Path]:
    """Write ``<stem>.json`` and ``<stem>.md`` into ``out_dir`` (atomically) and return their paths."""
    out_dir = Path(out_dir)
    json_path, md_path = out_dir / f"{stem}.json", out_dir / f"{stem}.md"
    data = report_dict(metrics, label, baseline, baseline_label, context, verdict)
    write_text_atomic(json_path, json.dumps(data, indent=2))
    write_text_atomic(md_path, markdown_report(metrics, label, baseline, baseline_label, context, verdict))
    return json_path, md_path


def _cgf1_threshold(metrics: EvalMetrics) -> float | str:
    return next((m.score_threshold for m in metrics.cgf1.values()), "-")


def _category_ap(metrics: EvalMetrics, iou_type: str, category: str, key: str) -> float | None:
    coco = metrics.coco.get(iou_type)
    return coco.per_category.get(category, {}).get(key) if coco else None


def _metric_name(key: str) -> str:
    for iou_type, name in _IOU_NAMES.items():
        if key.startswith(iou_type + "_"):
            return f"{name} {key[len(iou_type) + 1 :]}"
    return key.replace("_", " ")


def percent(value: float | None) -> str:
    """``value`` x 100 with one decimal, ``-`` when undefined."""
    return "-" if value is None else f"{100 * value:.1f}"


def percent_change(before: float | None, after: float | None) -> str:
    """The signed change in percentage points, ``-`` when either side is undefined."""
    return "-" if before is None or after is None else f"{100 * (after - before):+.1f}"


def markdown_table(header: list[str], rows: list[list[str]]) -> list[str]:
    """The lines of a Markdown table."""
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return lines
