"""SAM 3 on video: a (tuned) detector inside transformers' ``Sam3VideoModel``, beside a tracker.

``Sam3VideoModel`` holds ``detector_model`` (a ``Sam3Model``: what sam3tune fine-tunes), ``tracker_model``
(a ``Sam3TrackerVideoModel`` without its own image encoder) and ``tracker_neck`` (an FPN neck over the
detector's ViT features for the tracker). The released ``facebook/sam3`` checkpoint is such a video model
(``../shared/docs/hf-sam3-notes.md``, sections 12 and 13), so a tuned detector can run inside a video model
whose tracker is the released one, untrained by sam3tune.

* :func:`read_tracker_source` checks that a folder holds tracker weights (``config.json`` of
  ``model_type: sam3_video`` and ``tracker_model.*`` / ``tracker_neck.*`` tensors) and says what to do
  when it does not;
* :func:`small_video_config` / :func:`save_random_video_model`: a video model of a named small architecture
  with random weights, shaped like ``facebook/sam3`` (for tests and the demo's plumbing: its tracker tracks
  nothing meaningful);
* :func:`load_video_model`: a video folder (an export, ``facebook/sam3``) ready for ``predict --video``,
  with the settings below applied.

Three things sam3tune changes when it runs a video model (none changes a weight):

1. **The prompt token** (``prompt_token: meta``): Meta's SAM 3 appends the geometry encoder's CLS token to
   every text prompt, and the released weights were trained so; transformers' video model calls its
   detector without it (as its image model does). A forward pre-hook on ``detector_model`` adds one padding
   box (label -10), which adds exactly that token; ``hf`` leaves transformers' call as it is.
2. **Mask post-processing without downloaded kernels**: transformers fetches NMS and connected components
   from the hub (``kernels-community/cv-utils``, which needs ``trust_remote_code``) and silently skips
   detection NMS and hole filling without them. :class:`TorchCvUtils` gives the same two operations in
   torch / scipy (greedy NMS on the mask-IoU matrix; 8-connected components with their areas).
3. **Trackers whose width equals the 64-channel memory** (small stand-in architectures only): transformers'
   object-pointer reshaping assumes a wider tracker; the pointers are flattened first.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from safetensors import SafetensorError, safe_open
from torch import nn
from transformers import Sam3Config, Sam3TrackerVideoConfig, Sam3VideoConfig, Sam3VideoModel

from sam3tune.errors import UserError
from sam3tune.json_file import JsonFileError, read_json
from sam3tune.model.architectures import ArchitectureSpec, sam3_config
from sam3tune.model.hub import ModelSpecError, hub_folder, is_hub_id
from sam3tune.model.prompt_token import (
    DEFAULT_MODE,
    RECORD_KEY,
    PromptToken,
    check_mode,
    recorded_prompt_token,
)
from sam3tune.model.roi_align import install_roi_align
from sam3tune.model.tokenizer import Tokenizer, load_tokenizer

log = logging.getLogger(__name__)

VIDEO_MODEL_TYPE = "sam3_video"
DETECTOR_PREFIX = "detector_model."
TRACKER_PREFIXES = ("tracker_model.", "tracker_neck.")
#: written beside an exported video model: where its detector and tracker came from
MANIFEST_FILE = "sam3tune_video.json"
#: channels of the tracker's memory features (fixed in transformers' memory attention)
MEMORY_CHANNELS = 64


class VideoModelError(UserError, ValueError):
    """A folder that cannot serve as (or give the tracker of) a SAM 3 video model; says what to do."""


# ------------------------------------------------------------------------------------------ tracker source
@dataclass
class TrackerSource:
    """A video-model folder's tracker: its ``config`` (``config.json`` as a dict) and where each
    ``tracker_model.*`` / ``tracker_neck.*`` tensor is stored (key as written -> safetensors file)."""

    folder: Path
    config: dict
    tensors: dict[str, Path]


def resolve_folder(spec: str | Path) -> Path:
    """A local folder, or the hub cache's snapshot of a hub id (``facebook/sam3``)."""
    path = Path(spec)
    if path.exists():
        return path
    if is_hub_id(str(spec)):
        return hub_folder(str(spec))
    raise ModelSpecError(f"no such folder or hub id: {spec!r}")


def read_tracker_source(spec: str | Path) -> TrackerSource:
    """Check that ``spec`` (a folder or hub id) holds a SAM 3 tracker and list its tensors (headers only).

    Raises :class:`VideoModelError` naming what is missing: no ``config.json``, a config that is not a
    ``sam3_video`` one (an image ``Sam3Model``, such as every sam3tune run and the small named
    architectures), or weights without the tracker keys."""
    folder = resolve_folder(spec)
    remedy = (
        "give a SAM 3 video model as the tracker source (video.tracker=facebook/sam3, or a local copy of it: "
        "a folder whose config.json has model_type sam3_video and whose weights hold tracker_model.* and "
        "tracker_neck.*)"
    )
    config_file = folder / "config.json"
    if not config_file.is_file():
        raise VideoModelError(f"{spec}: no config.json in {folder}; {remedy}")
    try:
        config = read_json(config_file, "model config")
    except (OSError, JsonFileError) as err:
        raise VideoModelError(f"{config_file}: unreadable ({err}); {remedy}") from err
    kind = config.get("model_type") if isinstance(config, dict) else None
    if kind != VIDEO_MODEL_TYPE:
        raise VideoModelError(
            f"{spec} holds no tracker: its config.json is a {kind!r} model (a detector alone), not "
            f"{VIDEO_MODEL_TYPE!r}; {remedy}"
        )
    tensors: dict[str, Path] = {}
    files = sorted(folder.glob("*.safetensors"))
    if not files:
        raise VideoModelError(f"{spec}: no *.safetensors weights in {folder}; {remedy}")
    for file in files:
        try:
            with safe_open(str(file), framework="pt") as handle:
                keys = handle.keys()
                tensors.update((key, file) for key in keys if key.startswith(TRACKER_PREFIXES))
        except SafetensorError as err:
            raise VideoModelError(f"weights file {file} is truncated or corrupt ({err})") from err
    for prefix in TRACKER_PREFIXES:
        if not any(key.startswith(prefix) for key in tensors):
            raise VideoModelError(f"{spec}: its weights hold no {prefix}* tensors; {remedy}")
    return TrackerSource(folder, config, tensors)


def load_tracker(source: TrackerSource) -> Sam3VideoModel:
    """The source's whole video model (float32, as transformers reads the folder: its own key renaming
    included), refused when any tracker weight is missing or wrongly shaped."""
    try:
        model, info = Sam3VideoModel.from_pretrained(
            str(source.folder),
            use_safetensors=True,
            output_loading_info=True,
            dtype=torch.float32,
            local_files_only=True,
        )
    except SafetensorError as err:
        raise VideoModelError(f"{source.folder}: weights truncated or corrupt ({err})") from err
    bad = sorted(
        str(key)
        for name in ("missing_keys", "mismatched_keys")
        for key in info.get(name) or []
        if str(key).startswith(TRACKER_PREFIXES)
    )
    if bad:
        raise VideoModelError(
            f"{source.folder}: {len(bad)} tracker weights missing or of the wrong shape: {', '.join(bad[:5])}"
        )
    return model.eval()


# ------------------------------------------------------------------------------------------ configs
def video_config(detector: Sam3Config, tracker_source_config: dict) -> Sam3VideoConfig:
    """The video config of ``detector`` beside the tracker (and the video settings) of a source config.

    The tracker runs on the detector's ViT features at the detector's input size: the two must agree
    (same image size, patch size and FPN width), else :class:`VideoModelError` names the difference."""
    settings = {k: v for k, v in tracker_source_config.items() if k not in _NOT_VIDEO_SETTINGS}
    config = Sam3VideoConfig(
        detector_config=detector.to_dict(),
        tracker_config=tracker_source_config["tracker_config"],
        **{k: v for k, v in settings.items() if k in Sam3VideoConfig.__dataclass_fields__},
    )
    tracker, vision = config.tracker_config, detector.vision_config
    theirs = (
        tracker.image_size,
        tracker.vision_config.backbone_config.patch_size,
        tracker.vision_config.fpn_hidden_size,
    )
    ours = (detector.image_size, vision.backbone_config.patch_size, vision.fpn_hidden_size)
    if theirs != ours:
        raise VideoModelError(
            f"the tracker expects image size, patch size, FPN width {theirs}, the detector has {ours}: "
            "the tracker source must be a SAM 3 of the detector's architecture (for a detector tuned from "
            "facebook/sam3, facebook/sam3 itself)"
        )
    return config


_NOT_VIDEO_SETTINGS = {
    "detector_config",
    "tracker_config",
    "model_type",
    "architectures",
    "transformers_version",
}


def small_video_config(spec: ArchitectureSpec) -> Sam3VideoConfig:
    """A video config for a named small architecture: its detector, and a tracker of the same width with
    one memory-attention layer, one memory-fuser layer and transformers' defaults otherwise (7 memory
    frames, 16 object pointers, 4 conditioning frames). The width (``detr_hidden_size``) must be a multiple
    of 64, the tracker's memory channels (``demo`` qualifies, ``tiny`` and ``small`` do not)."""
    width = spec.detr_hidden_size
    if width % MEMORY_CHANNELS:
        raise VideoModelError(
            f"a SAM 3 tracker needs detr_hidden_size a multiple of {MEMORY_CHANNELS} (its memory channels); "
            f"this architecture has {width}: use one such as 'demo'"
        )
    detector = sam3_config(spec)
    grid = spec.image_size // spec.patch_size
    tracker = Sam3TrackerVideoConfig(
        vision_config=detector.vision_config.to_dict(),
        prompt_encoder_config={
            "hidden_size": width,
            "image_size": spec.image_size,
            "patch_size": spec.patch_size,
        },
        mask_decoder_config={"hidden_size": width, "mlp_dim": 2 * width, "iou_head_hidden_dim": width},
        memory_attention_hidden_size=width,
        memory_attention_num_layers=1,
        memory_attention_feed_forward_hidden_size=2 * width,
        memory_attention_rope_feat_sizes=[grid, grid],
        memory_encoder_hidden_size=width,
        memory_encoder_output_channels=MEMORY_CHANNELS,
        mask_downsampler_embed_dim=width,
        memory_fuser_embed_dim=width,
        memory_fuser_intermediate_dim=2 * width,
        memory_fuser_num_layers=1,
        image_size=spec.image_size,
    )
    return Sam3VideoConfig(
        detector_config=detector.to_dict(), tracker_config=tracker.to_dict(), low_res_mask_size=4 * grid
    )


def random_video_model(spec: ArchitectureSpec, seed: int = 0) -> Sam3VideoModel:
    """:func:`small_video_config` with random weights; the global RNG state is left untouched."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return Sam3VideoModel(small_video_config(spec)).eval()


def save_random_video_model(spec: ArchitectureSpec, out: str | Path, seed: int = 0) -> Path:
    """Write a random video model of ``spec`` shaped like ``facebook/sam3`` (``config.json`` of model type
    ``sam3_video``, ``detector_model.*``, ``tracker_model.*`` and ``tracker_neck.*`` weights) with the
    architecture's tokenizer: a tracker source for tests and the demo whose tracking means nothing."""
    from sam3tune.model.tokenizer import HashingTokenizer

    out = Path(out)
    random_video_model(spec, seed).save_pretrained(out)
    HashingTokenizer(spec.text_vocab_size, spec.text_max_length).save(out)
    return out


# ------------------------------------------------------------------------------------------ running
@dataclass
class VideoModelBundle:
    """A loaded video model with its prompt ``tokenize`` (Meta's ids for CLIP vocabularies), the square
    input side ``image_size`` and the ``prompt_token`` mode it runs in."""

    model: Sam3VideoModel
    tokenize: Tokenizer
    image_size: int
    source: str
    prompt_token: PromptToken


def load_video_model(
    spec: str | Path,
    *,
    prompt_token: PromptToken | None = None,
    device: torch.device | str = "cpu",
    dtype: torch.dtype = torch.float32,
) -> VideoModelBundle:
    """Load a SAM 3 video model folder (``sam3tune export --format video``, or ``facebook/sam3``) for
    ``predict --video``, refusing missing or unexpected weights, and apply the three settings of the module
    docstring. ``prompt_token`` None: the mode the detector records in its config (``sam3tune_prompt_token``,
    how it was trained), else ``meta`` (``facebook/sam3``)."""
    folder = resolve_folder(spec)
    config_file = folder / "config.json"
    config = read_json(config_file, "model config") if config_file.is_file() else None
    kind = config.get("model_type") if isinstance(config, dict) else None
    if kind != VIDEO_MODEL_TYPE:
        raise VideoModelError(
            f"{spec} is not a SAM 3 video model (config.json model_type {kind!r}, expected "
            f"{VIDEO_MODEL_TYPE!r}); a tuned run's detector goes inside one with `sam3tune export --format "
            f"video RUN_DIR OUT` (tracker from facebook/sam3), then `sam3tune predict --video --model OUT`"
        )
    try:
        model, info = Sam3VideoModel.from_pretrained(
            str(folder), use_safetensors=True, output_loading_info=True, dtype=dtype, local_files_only=True
        )
    except SafetensorError as err:
        raise VideoModelError(f"{folder}: weights truncated or corrupt ({err})") from err
    problems = {name: sorted(map(str, info.get(name) or [])) for name in ("missing_keys", "mismatched_keys")}
    if any(problems.values()):
        raise VideoModelError(
            f"{folder}: weights do not fit the video model: "
            + "; ".join(f"{k} {len(v)}: {', '.join(v[:5])}" for k, v in problems.items() if v)
        )
    mode = prompt_token or detector_prompt_token(model.config.detector_config)
    prepare_video_model(model, mode)
    max_length = model.config.detector_config.text_config.max_position_embeddings
    return VideoModelBundle(
        model=model.to(device).eval(),
        tokenize=load_tokenizer(folder, max_length=max_length),
        image_size=int(model.config.detector_config.image_size),
        source=str(spec),
        prompt_token=mode,
    )


def detector_prompt_token(config: Sam3Config) -> PromptToken:
    """The prompt-token mode a detector config records (how the detector was trained,
    ``sam3tune.model.prompt_token``), else the default (``meta``: as ``facebook/sam3`` was trained)."""
    mode = recorded_prompt_token(config)
    if mode is None:
        return DEFAULT_MODE
    try:
        return check_mode(mode, f"{RECORD_KEY} of the detector's config")
    except ValueError as err:
        raise VideoModelError(str(err)) from err


def prepare_video_model(model: Sam3VideoModel, prompt_token: PromptToken) -> None:
    """Apply the module docstring's three settings to ``model`` (idempotent)."""
    if prompt_token not in ("meta", "hf"):
        raise VideoModelError(f"prompt_token must be 'meta' or 'hf', got {prompt_token!r}")
    install_roi_align()  # the geometry encoder (the CLS token) needs it where torchvision is missing
    install_cv_utils()
    detector = model.detector_model
    handle = getattr(detector, "_sam3tune_prompt_hook", None)
    if handle is not None:
        handle.remove()
    detector._sam3tune_prompt_hook = (
        detector.register_forward_pre_hook(_append_prompt_token, with_kwargs=True)
        if prompt_token == "meta"
        else None
    )
    _fix_narrow_object_pointers(model.tracker_model)


def _append_prompt_token(module: nn.Module, args: tuple, kwargs: dict) -> tuple[tuple, dict]:
    """Forward pre-hook of the detector: a text-only call gets one padding box (label -10), which adds the
    geometry encoder's CLS token to the prompt and nothing else (Meta's text-only forward)."""
    if kwargs.get("input_boxes") is None:
        embeds = kwargs.get("vision_embeds")
        reference = embeds.fpn_hidden_states[0] if embeds is not None else kwargs["pixel_values"]
        batch = reference.shape[0]
        kwargs["input_boxes"] = torch.zeros(batch, 1, 4, dtype=reference.dtype, device=reference.device)
        kwargs["input_boxes_labels"] = torch.full((batch, 1), -10, dtype=torch.long, device=reference.device)
    return args, kwargs


def _fix_narrow_object_pointers(tracker: nn.Module) -> None:
    """Object pointers of a tracker as wide as its memory come out 4-D where transformers expects 3-D
    (its reshape only runs for wider trackers): flatten each pointer to (batch, channels) first."""
    if getattr(tracker, "_sam3tune_pointer_fix", False) or tracker.mem_dim != tracker.hidden_dim:
        return
    original = tracker._process_object_pointers

    def process(offsets, tokens, max_pointers, batch_size, channels, device):
        tokens = [t.reshape(batch_size, channels) for t in tokens]
        return original(offsets, tokens, max_pointers, batch_size, channels, device)

    tracker._process_object_pointers = process
    tracker._sam3tune_pointer_fix = True


class TorchCvUtils:
    """The two operations transformers' video model takes from the ``kernels-community/cv-utils`` hub
    kernel, computed locally: ``generic_nms`` and ``cc_2d``."""

    @staticmethod
    def generic_nms(
        ious: torch.Tensor, scores: torch.Tensor, iou_threshold: float, use_iou_matrix: bool = True
    ):
        """Greedy NMS: highest score first, drop every later one whose IoU with a kept one exceeds
        ``iou_threshold``; returns the kept indices (into ``scores``)."""
        order = torch.argsort(scores, descending=True, stable=True).tolist()
        overlaps = ious.detach().cpu().numpy()
        kept: list[int] = []
        for i in order:
            if all(overlaps[i, j] <= iou_threshold for j in kept):
                kept.append(i)
        return torch.tensor(sorted(kept), dtype=torch.long, device=scores.device)

    @staticmethod
    def cc_2d(masks: torch.Tensor, get_counts: bool = True):
        """8-connected components of ``masks`` (N, 1, H, W) uint8: ``labels`` (component number, 0 on
        background) and ``counts`` (the area of the pixel's component, 0 on background), both int32."""
        from scipy import ndimage

        array = masks.detach().cpu().numpy().astype(bool)
        labels = np.zeros(array.shape, dtype=np.int32)
        counts = np.zeros(array.shape, dtype=np.int32)
        structure = np.ones((3, 3), dtype=bool)
        for n in range(array.shape[0]):
            found, _ = ndimage.label(array[n, 0], structure=structure)
            areas = np.bincount(found.ravel())
            areas[0] = 0
            labels[n, 0] = found
            counts[n, 0] = areas[found]
        return torch.from_numpy(labels).to(masks.device), torch.from_numpy(counts).to(masks.device)


def install_cv_utils() -> None:
    """Give transformers' video module :class:`TorchCvUtils` instead of the hub kernel it would fetch."""
    from transformers.models.sam3_video import modeling_sam3_video

    if not isinstance(modeling_sam3_video.cv_utils_kernel, TorchCvUtils):
        modeling_sam3_video.cv_utils_kernel = TorchCvUtils()
