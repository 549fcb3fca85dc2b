"""``sam3tune eval`` on video ground truth (YouTube-VIS / OVIS): a results file, or video models run on
the ground truth's frames, tuned next to a baseline as for images.

* ``eval --predictions tracks.json --gt annotations.json``: video AP and HOTA of the results;
* ``eval --model VIDEO_MODEL --data annotations.json [baseline=VIDEO_MODEL]``: each model tracks every
  category (its name, ``_`` read as a space, or ``data.prompts``) through every video of the ground truth
  (``sam3tune.video.predictor.VideoPredictor`` with the ``video.*`` keys) and is scored the same way; with
  ``video.detections=true`` the detector's own per-frame detections are scored too, as COCO images (box and
  mask AP, cgF1: detection apart from tracking).

Frames are read from ``video.frames`` (default: ``JPEGImages/`` beside the annotation file, else its
folder) joined with each video's ``file_names``, which may not leave that folder.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
from faster_coco_eval.core import mask as coco_mask

from sam3tune.data.layout import image_path
from sam3tune.eval.coco_results import ResultsError, save_coco_results
from sam3tune.eval.config import EvalRunConfig
from sam3tune.eval.evaluate import EvalMetrics, evaluate_predictions
from sam3tune.eval.ground_truth import GroundTruthError
from sam3tune.eval.report import percent, percent_change
from sam3tune.eval.rle import _binary_ready
from sam3tune.eval.video_metrics import VideoMetrics, video_metrics
from sam3tune.eval.ytvis import Track, VideoSet, load_video_ground_truth, load_video_results
from sam3tune.json_file import JsonFileError
from sam3tune.output_files import write_text_atomic

SUMMARY_ROWS = (
    ("video_AP", "video mask AP"),
    ("video_AP50", "video mask AP50"),
    ("video_AP75", "video mask AP75"),
    ("video_AR10", "video AR10"),
    ("HOTA", "HOTA"),
    ("DetA", "DetA"),
    ("AssA", "AssA"),
    ("frame_bbox_AP", "per-frame box AP"),
    ("frame_bbox_AP50", "per-frame box AP50"),
    ("frame_segm_AP", "per-frame mask AP"),
    ("frame_segm_AP50", "per-frame mask AP50"),
    ("frame_bbox_cgF1", "per-frame box cgF1"),
)


def _ground_truth(path: str | Path) -> VideoSet:
    try:
        return load_video_ground_truth(path)
    except JsonFileError as err:
        raise GroundTruthError(str(err)) from err


def eval_video_predictions(
    predictions: str | Path, gt: str | Path, out_dir: str | Path, config: EvalRunConfig
) -> tuple[VideoMetrics, str]:
    """Score a YouTube-VIS results file against video ground truth; write ``eval.json`` / ``eval.md``."""
    truth = _ground_truth(gt)
    try:
        tracks = load_video_results(predictions, truth)
    except JsonFileError as err:
        raise ResultsError(str(err)) from err
    metrics = video_metrics(truth, tracks, config.video.hota_score_threshold)
    runs = [(Path(predictions).name, metrics, None)]
    context = {"predictions": str(predictions), "ground truth": str(gt)}
    return metrics, _write(out_dir, runs, context)


def eval_video_model(
    model: str,
    gt: str | Path,
    out_dir: str | Path,
    config: EvalRunConfig,
    baseline: str | None = None,
    device: str = "cpu",
    progress: bool = True,
) -> tuple[VideoMetrics, VideoMetrics | None, str]:
    """Track the ground truth's categories through its videos with ``model`` (and ``baseline``) and score
    both (module docstring); writes ``eval.json``, ``eval.md``, ``predictions.json`` (and
    ``baseline_predictions.json``: YouTube-VIS results) to ``out_dir``."""
    from sam3tune.video.predictor import VideoPredictor

    out_dir = Path(out_dir)
    truth = _ground_truth(gt)
    frames_root = _frames_root(Path(gt), config.video.frames)
    prompts = _prompts(truth, config.data.prompts)
    frame_truth = frame_ground_truth(truth) if config.video.detections else None
    runs = []
    for spec, stem in ((baseline, "baseline_predictions"), (model, "predictions")):
        if spec is None:
            continue
        predictor = VideoPredictor.load(spec, _settings(config), device=device)
        tracks, found = _track_all(predictor, truth, frames_root, prompts, config, progress)
        (out_dir / f"{stem}.json").write_text(json.dumps([_result(t) for t in tracks]), encoding="utf-8")
        metrics = video_metrics(truth, tracks, config.video.hota_score_threshold)
        frames = None
        if frame_truth is not None:
            save_coco_results(found, out_dir / f"{stem}_frames.json")
            frames = evaluate_predictions(frame_truth, found, config)
        runs.append((spec, metrics, frames))
        del predictor
    context = {
        "model": model,
        **({"baseline": baseline} if baseline else {}),
        "data": str(gt),
        "frames": str(frames_root),
        "prompts": {truth.categories[c]: p for c, p in prompts.items()},
    }
    markdown = _write(out_dir, runs[::-1], context)
    base = runs[0][1] if baseline is not None else None
    return runs[-1][1], base, markdown


def _settings(config: EvalRunConfig):
    from sam3tune.video.config import VideoConfig

    names = {f.name for f in dataclasses.fields(VideoConfig)}
    return VideoConfig(**{n: getattr(config.video, n) for n in names})


def _frames_root(gt: Path, given: Path | None) -> Path:
    if given is not None:
        root = Path(given)
    elif (gt.parent / "JPEGImages").is_dir():
        root = gt.parent / "JPEGImages"
    else:
        root = gt.parent
    if not root.is_dir():
        raise FileNotFoundError(f"video.frames {root}: no such folder (the frames of {gt})")
    return root


def _prompts(truth: VideoSet, given: dict | None) -> dict[int, str]:
    """Category id -> prompt: ``data.prompts`` by name or id, else the name with ``_`` as a space."""
    given = {str(k): str(v) for k, v in (given or {}).items()}
    return {
        c: given.get(name, given.get(str(c), name.replace("_", " ").strip()))
        for c, name in truth.categories.items()
    }


def _track_all(predictor, truth: VideoSet, root: Path, prompts: dict[int, str], config, progress: bool):
    """Every video tracked: the tracks (``Track``, full length) and the per-frame detections (COCO
    results with the frame ids of :func:`frame_ground_truth`)."""
    from sam3tune.eval.rle import encode_masks
    from sam3tune.progress import progress_bar

    categories = list(prompts)
    texts = [prompts[c] for c in categories]
    detections = config.postprocess if config.video.detections else None
    tracks: list[Track] = []
    found: list[dict] = []
    first_frame = 1
    for video_id, video in progress_bar(list(truth.videos.items()), desc="videos", disable=not progress):
        files = [image_path(root, name, f"video {video_id}") for name in video["file_names"]]
        reader = _reader(files, video["name"], config.video.fps)
        by_track: dict[int, Track] = {}
        for frame in predictor.track(reader, texts, total_frames=len(files), detections=detections):
            if frame.objects:
                rles = encode_masks(np.stack([o.mask for o in frame.objects]))
                for obj, rle in zip(frame.objects, rles, strict=True):
                    track = by_track.setdefault(
                        obj.track_id,
                        Track(
                            video_id,
                            categories[obj.prompt],
                            [None] * video["length"],
                            obj.score,
                            0,
                            obj.track_id,
                        ),
                    )
                    track.masks[frame.frame] = rle
            if frame.detections is not None:
                for prompt, found_here in enumerate(frame.detections):
                    found += found_here.to_coco_results(first_frame + frame.frame, categories[prompt])
        tracks += by_track.values()
        first_frame += video["length"]
    return tracks, found


def _reader(files: list[Path], name: str, fps: float):
    from sam3tune.video.frames import FrameReader

    return FrameReader(name, "folder", fps, len(files), files=files)


def _result(track: Track) -> dict:
    return {
        "video_id": track.video_id,
        "category_id": track.category_id,
        "score": track.score,
        "track_id": track.track_id,
        "segmentations": track.masks,
    }


def frame_ground_truth(truth: VideoSet) -> dict:
    """The videos' frames as COCO images (ids 1, 2, ... video after video, frame after frame) with every
    visible object as an annotation: per-frame detection is scored on it."""
    images, annotations = [], []
    for video_id, video in truth.videos.items():
        first = len(images) + 1
        images += [
            {"id": first + t, "width": video["width"], "height": video["height"], "file_name": name}
            for t, name in enumerate(video["file_names"])
        ]
        for track in (t for t in truth.tracks if t.video_id == video_id):
            for t, rle in enumerate(track.masks):
                if rle is None:
                    continue
                binary = _binary_ready(rle)
                annotations.append(
                    {
                        "id": len(annotations) + 1,
                        "image_id": first + t,
                        "category_id": track.category_id,
                        "segmentation": rle,
                        "area": float(coco_mask.area(binary)),
                        "bbox": [float(v) for v in coco_mask.toBbox(binary)],
                        "iscrowd": track.iscrowd,
                    }
                )
    categories = [{"id": c, "name": n} for c, n in truth.categories.items()]
    return {"images": images, "annotations": annotations, "categories": categories}


def _summary(metrics: VideoMetrics, frames: EvalMetrics | None) -> dict[str, float | None]:
    summary = metrics.summary()
    if frames is not None:
        summary.update({f"frame_{k}": v for k, v in frames.summary().items()})
    return summary


def _write(out_dir: str | Path, runs: list, context: dict) -> str:
    """``eval.json`` and ``eval.md`` of ``runs`` ((label, video metrics, frame metrics), model first)."""
    out_dir = Path(out_dir)
    report: dict = {"context": context}
    for key, (label, metrics, frames) in zip(("model", "baseline"), runs, strict=False):
        report[key] = {
            "label": label,
            "summary": _summary(metrics, frames),
            "metrics": {
                "video": dataclasses.asdict(metrics),
                **({"frames": frames.to_dict()} if frames is not None else {}),
            },
        }
    write_text_atomic(out_dir / "eval.json", json.dumps(report, indent=2))
    markdown = markdown_video_report(report)
    write_text_atomic(out_dir / "eval.md", markdown)
    return markdown


def markdown_video_report(report: dict) -> str:
    """The Markdown of a video ``eval.json`` (percentages, baseline | model | change with a baseline)."""
    model, base = report["model"], report.get("baseline")
    lines = ["# Video evaluation", ""]
    lines += [f"- {k}: {v}" for k, v in report["context"].items()]
    lines += [""]
    if base is not None:
        lines += [
            f"| metric (percent) | {base['label']} | {model['label']} | change |",
            "|---|---:|---:|---:|",
        ]
    else:
        lines += [f"| metric (percent) | {model['label']} |", "|---|---:|"]
    for key, label in SUMMARY_ROWS:
        if key not in model["summary"]:
            continue
        new = model["summary"][key]
        if base is not None:
            old = base["summary"].get(key)
            lines.append(f"| {label} | {percent(old)} | {percent(new)} | {percent_change(old, new)} |")
        else:
            lines.append(f"| {label} | {percent(new)} |")
    lines += ["", "Per category (video mask AP50 / HOTA):", ""]
    per = model["metrics"]["video"]["per_category"]
    for name, values in per.items():
        lines.append(f"- {name}: {percent(values.get('AP50'))} / {percent(values.get('HOTA'))}")
    return "\n".join(lines) + "\n"
