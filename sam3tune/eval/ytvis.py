"""YouTube-VIS / OVIS video instance segmentation files: ground truth and results, read and checked.

Ground truth (``annotations.json``): ``videos`` (``id``, ``width``, ``height``, ``length`` and
``file_names``: the frames, relative to the frames folder), ``categories`` (``id``, ``name``) and
``annotations``, one per object *track*: ``video_id``, ``category_id``, ``iscrowd`` (0/1) and
``segmentations``: one mask per frame (COCO RLE, compressed or not, or polygons) or null where the object
is not visible. Results (``tracks.json`` of ``predict --video``): a list of tracks, each ``video_id``,
``category_id``, ``score`` in [0, 1] and ``segmentations`` (compressed RLE or null per frame).

Everything is converted to compressed RLE on reading; a problem is an error naming the file and the entry.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from sam3tune.eval.coco_results import ResultsError
from sam3tune.eval.ground_truth import GroundTruthError
from sam3tune.eval.rle import RLE, _json_ready, annotation_rle, rle_problem


@dataclass
class Track:
    """One object track of one video: per-frame RLEs (None where absent)."""

    video_id: int
    category_id: int
    masks: list[RLE | None]
    score: float = 1.0
    iscrowd: int = 0
    track_id: int = 0


@dataclass
class VideoSet:
    """Videos (id -> ``{"width", "height", "length", "file_names", "name"}``), categories (id -> name)
    and tracks: a ground truth or a set of results laid over one."""

    videos: dict[int, dict]
    categories: dict[int, str]
    tracks: list[Track] = field(default_factory=list)


def is_video_ground_truth(path: str | Path) -> bool:
    """Whether ``path`` is a JSON file of video ground truth (it has ``"videos"`` at top level), judged
    from its first 64 KiB."""
    path = Path(path)
    if not path.is_file() or path.suffix.lower() != ".json":
        return False
    with open(path, encoding="utf-8", errors="replace") as handle:
        return '"videos"' in handle.read(65536)


def load_video_ground_truth(path: str | Path) -> VideoSet:
    """Read and check a YouTube-VIS / OVIS ground-truth file."""
    from sam3tune.json_file import read_json

    path = Path(path)
    data = read_json(path, "video ground truth")
    if not isinstance(data, dict) or not all(isinstance(data.get(k), list) for k in ("videos", "categories")):
        raise GroundTruthError(
            f"{path}: not YouTube-VIS ground truth (needs lists 'videos' and 'categories')"
        )
    videos: dict[int, dict] = {}
    for index, video in enumerate(data["videos"]):
        try:
            vid, width, height = int(video["id"]), int(video["width"]), int(video["height"])
            names = [str(n) for n in video["file_names"]]
        except (KeyError, TypeError, ValueError) as err:
            raise GroundTruthError(f"{path}: video {index} lacks id/width/height/file_names ({err})") from err
        length = int(video.get("length", len(names)))
        if length != len(names) or min(width, height, length) < 1:
            raise GroundTruthError(
                f"{path}: video {vid}: length {length}, {len(names)} file_names, {width}x{height}"
            )
        videos[vid] = {"width": width, "height": height, "length": length, "file_names": names}
        videos[vid]["name"] = str(video.get("name") or Path(names[0]).parent.as_posix())
    categories = {int(c["id"]): str(c["name"]) for c in data["categories"]}
    truth = VideoSet(videos, categories)
    for index, entry in enumerate(data.get("annotations") or []):
        where = f"{path}: annotation {index} (id {entry.get('id') if isinstance(entry, dict) else '?'})"
        track = _track(entry, videos, categories, where, GroundTruthError)
        crowd = entry.get("iscrowd", 0)
        if crowd not in (0, 1):
            raise GroundTruthError(f"{where}: iscrowd must be 0 or 1, got {crowd!r}")
        track.iscrowd = int(crowd)
        track.track_id = int(entry.get("id", index + 1))
        truth.tracks.append(track)
    return truth


def load_video_results(results: str | Path | list, truth: VideoSet) -> list[Track]:
    """Read and check YouTube-VIS results (a file or the parsed list) against ``truth``."""
    from sam3tune.json_file import read_json

    where_file = str(results) if not isinstance(results, list) else "results"
    data = results if isinstance(results, list) else read_json(Path(results), "video results")
    if not isinstance(data, list):
        raise ResultsError(f"{where_file}: YouTube-VIS results must be a list of tracks")
    tracks = []
    for index, entry in enumerate(data):
        where = f"{where_file}: track {index}"
        track = _track(entry, truth.videos, truth.categories, where, ResultsError)
        score = entry.get("score")
        if isinstance(score, bool) or not isinstance(score, (int, float)) or not 0 <= score <= 1:
            raise ResultsError(f"{where}: score must be a number in [0, 1], got {score!r}")
        track.score = float(score)
        track.track_id = int(entry.get("track_id", index + 1))
        tracks.append(track)
    return tracks


def _track(entry: object, videos: dict, categories: dict, where: str, error: type[Exception]) -> Track:
    if not isinstance(entry, dict):
        raise error(f"{where}: not an object")
    try:
        video_id, category_id = int(entry["video_id"]), int(entry["category_id"])
        segmentations = entry["segmentations"]
    except (KeyError, TypeError, ValueError) as err:
        raise error(f"{where}: needs integer video_id, category_id and a segmentations list ({err})") from err
    if video_id not in videos:
        raise error(f"{where}: video_id {video_id} is not in the ground truth")
    if category_id not in categories:
        raise error(f"{where}: category_id {category_id} is not in the ground truth")
    video = videos[video_id]
    if not isinstance(segmentations, list) or len(segmentations) != video["length"]:
        count = len(segmentations) if isinstance(segmentations, list) else segmentations
        raise error(
            f"{where}: segmentations must list {video['length']} frames (video {video_id}), got {count}"
        )
    masks: list[RLE | None] = []
    for frame, segmentation in enumerate(segmentations):
        if segmentation is None:
            masks.append(None)
            continue
        if isinstance(segmentation, dict) and isinstance(segmentation.get("counts"), str):
            problem = rle_problem(segmentation)
            if problem is None and list(segmentation["size"]) != [video["height"], video["width"]]:
                problem = (
                    f"size {segmentation['size']} is not the video's {[video['height'], video['width']]}"
                )
            if problem is not None:
                raise error(f"{where}, frame {frame}: {problem}")
            masks.append({"size": list(segmentation["size"]), "counts": segmentation["counts"]})
            continue
        try:
            masks.append(_json_ready(annotation_rle(segmentation, video["height"], video["width"])))
        except (TypeError, ValueError, KeyError) as err:
            raise error(f"{where}, frame {frame}: not a usable mask ({err})") from err
    return Track(video_id, category_id, masks)
