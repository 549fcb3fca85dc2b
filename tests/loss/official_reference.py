"""TEST-ONLY glue: Meta's ``sam3==0.1.4`` loss and matchers on CPU as the parity reference.

Nothing in ``sam3tune`` imports this. It follows docs/sam3-loss-spec.md section 14: ``sam3/__init__.py``
is not executed (it imports the whole model zoo), the Triton focal-loss module gets a stand-in, the official
pure-torch focal branch is forced, and ``normalization="global"`` gets a one-process gloo group.
Also holds the seeded random case generator shared by the parity tests and ``bench/loss.py``.
"""

from __future__ import annotations

import contextlib
import functools
import importlib
import importlib.util
import sys
import tempfile
import types
from collections.abc import Iterator
from dataclasses import dataclass, field

import torch
import torch.distributed as dist

from sam3tune.loss import CriterionConfig, LayerMatchings, Matching


@dataclass(frozen=True)
class Official:
    sam3_loss: types.ModuleType
    loss_fns: types.ModuleType
    matcher: types.ModuleType
    box_ops: types.ModuleType
    model_misc: types.ModuleType


def unavailable_reason() -> str | None:
    """Why the reference cannot be loaded, or None when it can."""
    try:
        load_official()
    except ImportError as err:
        return (
            f"Meta's sam3==0.1.4 reference is not importable ({err}); install it with scripts/setup.sh --test"
        )
    return None


@functools.cache
def load_official() -> Official:
    """Import the official loss modules without running ``sam3/__init__.py``. Raises ImportError."""
    if "sam3" not in sys.modules:
        spec = importlib.util.find_spec("sam3")
        if spec is None or not spec.submodule_search_locations:
            raise ImportError("no module named 'sam3'")
        package = types.ModuleType("sam3")
        package.__path__ = list(spec.submodule_search_locations)
        sys.modules["sam3"] = package
    focal_name = "sam3.train.loss.sigmoid_focal_loss"
    if focal_name not in sys.modules:  # imports triton at module level; only its names are needed
        stand_in = types.ModuleType(focal_name)

        def _no_triton(*args, **kwargs):
            raise RuntimeError("the Triton focal loss is replaced by the official torch branch in tests")

        stand_in.triton_sigmoid_focal_loss = _no_triton
        stand_in.triton_sigmoid_focal_loss_reduce = _no_triton
        sys.modules[focal_name] = stand_in
    loss_fns = importlib.import_module("sam3.train.loss.loss_fns")
    if not getattr(loss_fns.sigmoid_focal_loss, "_torch_branch", False):
        forced = functools.partial(loss_fns.sigmoid_focal_loss, triton=False)
        forced._torch_branch = True
        loss_fns.sigmoid_focal_loss = forced
    return Official(
        sam3_loss=importlib.import_module("sam3.train.loss.sam3_loss"),
        loss_fns=loss_fns,
        matcher=importlib.import_module("sam3.train.matcher"),
        box_ops=importlib.import_module("sam3.model.box_ops"),
        model_misc=importlib.import_module("sam3.model.model_misc"),
    )


@contextlib.contextmanager
def single_process_group() -> Iterator[None]:
    """A one-process gloo group (file store, no network) for ``normalization="global"``."""
    if dist.is_initialized():
        yield
        return
    with tempfile.TemporaryDirectory() as folder:
        dist.init_process_group("gloo", init_method=f"file://{folder}/store", rank=0, world_size=1)
        try:
            yield
        finally:
            dist.destroy_process_group()


class OfficialCriterion:
    """Meta's ``Sam3LossWrapper`` with the official matchers, configured like a ``CriterionConfig``."""

    def __init__(self, config: CriterionConfig, with_masks: bool) -> None:
        o = load_official()
        self.official = o
        w, m, om = config.weights, config.matcher, config.o2m_matcher
        self.matcher = o.matcher.BinaryHungarianMatcherV2(
            cost_class=m.cost_class,
            cost_bbox=m.cost_bbox,
            cost_giou=m.cost_giou,
            focal=True,
            alpha=m.alpha,
            gamma=m.gamma,
            stable=False,
        )
        self.o2m_matcher = o.matcher.BinaryOneToManyMatcher(
            alpha=om.alpha, threshold=om.threshold, topk=om.topk
        )
        loss_fns = [
            o.loss_fns.Boxes(weight_dict={"loss_bbox": w.loss_bbox, "loss_giou": w.loss_giou}),
            o.loss_fns.IABCEMdetr(
                pos_weight=config.pos_weight,
                weight_dict={"loss_ce": w.loss_ce, "presence_loss": w.presence_loss},
                gamma=config.gamma,
                weak_loss=False,
                alpha=config.alpha,
                pad_n_queries=config.pad_n_queries,
                pad_scale_pos=config.pad_scale_pos,
                use_presence=config.use_presence,
                presence_alpha=config.presence_alpha,
                presence_gamma=config.presence_gamma,
            ),
        ]
        if with_masks:
            loss_fns.append(
                o.loss_fns.Masks(
                    weight_dict={"loss_mask": w.loss_mask, "loss_dice": w.loss_dice},
                    focal_alpha=config.focal_alpha,
                    focal_gamma=config.focal_gamma,
                    num_sample_points=config.num_sample_points,
                    oversample_ratio=config.oversample_ratio,
                    importance_sample_ratio=config.importance_sample_ratio,
                )
            )
        self.wrapper = o.sam3_loss.Sam3LossWrapper(
            loss_fns_find=loss_fns,
            normalization=config.normalization,
            matcher=self.matcher,
            o2m_matcher=self.o2m_matcher,
            o2m_weight=config.o2m_weight,
            use_o2m_matcher_on_o2m_aux=config.use_o2m_matcher_on_o2m_aux,
            normalize_by_valid_object_num=config.normalize_by_valid_object_num,
            scale_by_find_batch_size=config.scale_by_find_batch_size,
        )
        self.use_o2m_matcher_on_o2m_aux = config.use_o2m_matcher_on_o2m_aux

    def targets(self, targets: list[dict]) -> dict:
        """The official stage target dict (``Sam3Image.back_convert`` layout) of our per-query targets."""
        counts = [len(t["boxes"]) for t in targets]
        boxes = torch.cat([t["boxes"] for t in targets]).float()
        most = max(counts)
        padded = torch.zeros(len(targets), most, 4)
        ids = torch.full((len(targets), most), -1, dtype=torch.long)
        for b, t in enumerate(targets):
            padded[b, : counts[b]] = t["boxes"]
            ids[b, : counts[b]] = torch.arange(counts[b])
        has_masks = any(t.get("masks") is not None for t in targets)
        masks = valid = None
        if has_masks:
            masks = torch.cat([t["masks"] for t in targets])
            valid = torch.cat(
                [t.get("is_valid_mask", torch.ones(len(t["boxes"]), dtype=torch.bool)) for t in targets]
            )
        return {
            "num_boxes": torch.tensor(counts, dtype=torch.long),
            "boxes": boxes,
            "boxes_xyxy": self.official.box_ops.box_cxcywh_to_xyxy(boxes),
            "boxes_padded": padded,
            "object_ids_packed": torch.arange(len(boxes)),
            "object_ids_padded": ids,
            "masks": masks,
            "is_valid_mask": valid,
            "is_exhaustive": torch.ones(len(targets), dtype=torch.bool),
        }

    def outputs(self, outputs: dict, official_targets: dict) -> dict:
        """Our outputs in the official layout with each layer's one-to-one ``indices`` (as the model does)."""
        to_xyxy = self.official.box_ops.box_cxcywh_to_xyxy

        def layer(d: dict) -> dict:
            out = {
                "pred_logits": d["pred_logits"][..., None],
                "pred_boxes": d["pred_boxes"],
                "pred_boxes_xyxy": to_xyxy(d["pred_boxes"]),
            }
            if "presence_logits" in d:
                out["presence_logit_dec"] = d["presence_logits"]
            if "pred_logits_o2m" in d:
                out["pred_logits_o2m"] = d["pred_logits_o2m"][..., None]
                out["pred_boxes_o2m"] = d["pred_boxes_o2m"]
                out["pred_boxes_xyxy_o2m"] = to_xyxy(d["pred_boxes_o2m"])
            out["indices"] = self.matcher(out, official_targets)
            return out

        final = layer(outputs)
        for key in ("pred_masks", "pred_masks_o2m"):
            if key in outputs:
                final[key] = outputs[key]
        final["aux_outputs"] = [layer(a) for a in outputs.get("aux_outputs", [])]
        return final

    def matchings(self, official_outputs: dict, official_targets: dict) -> LayerMatchings:
        """The official matchings of every layer, earliest first (o2m: as the wrapper computes them)."""
        layers = [*official_outputs["aux_outputs"], official_outputs]
        total = int(official_targets["num_boxes"].sum())
        one_to_one = [to_matching(layer["indices"], total) for layer in layers]
        if "pred_logits_o2m" not in official_outputs:
            return LayerMatchings(one_to_one, None)
        one_to_many = []
        for i, layer in enumerate(layers):
            o2m = {k[: -len("_o2m")]: v for k, v in layer.items() if k.endswith("_o2m")}
            use_o2m = self.use_o2m_matcher_on_o2m_aux or i == len(layers) - 1
            indices = (self.o2m_matcher if use_o2m else self.matcher)(o2m, official_targets)
            one_to_many.append(to_matching(indices, total))
        return LayerMatchings(one_to_one, one_to_many)

    def __call__(self, official_outputs: dict, official_targets: dict) -> dict:
        stages = self.official.model_misc.SAM3Output([[official_outputs]])
        return self.wrapper(stages, [official_targets])


def to_matching(indices: tuple, num_targets: int) -> Matching:
    batch_idx, src_idx, tgt_idx = indices
    if tgt_idx is None:  # pairs aligned with the packed GT order
        tgt_idx = torch.arange(len(batch_idx))
        assert len(batch_idx) in (0, num_targets)
    return Matching(batch_idx.long(), src_idx.long(), tgt_idx.long())


@dataclass
class Case:
    """A seeded random batch: model outputs (leaf tensors) and per-query targets (our format)."""

    name: str
    seed: int
    counts: list[int]
    num_queries: int = 20
    num_layers: int = 6
    o2m: bool = True
    presence: bool = True
    mask_size: tuple[int, int] | None = None  # predicted (h, w); targets are 3.5x larger
    invalid_mask_share: float = 0.0
    logit_scale: float = 3.0
    extreme: bool = False
    zero_size_share: float = 0.0
    invisible_rows: tuple[int, ...] = ()
    duplicate_gt: bool = False
    config: dict = field(default_factory=dict)

    def build(self) -> tuple[dict, list[dict]]:
        g = torch.Generator().manual_seed(self.seed)
        batch, queries = len(self.counts), self.num_queries

        def logits(*shape: int) -> torch.Tensor:
            if self.extreme:
                x = (torch.rand(*shape, generator=g) * 2 - 1) * 25
                return torch.where(torch.rand(*shape, generator=g) < 0.2, x.sign() * 25, x)
            return torch.randn(*shape, generator=g) * self.logit_scale

        targets = []
        for b, n in enumerate(self.counts):
            centre = torch.rand(n, 2, generator=g) * 0.6 + 0.2
            size = torch.rand(n, 2, generator=g) * 0.3 + 0.05
            if self.duplicate_gt and n >= 2:  # near-identical GT pairs share their top predictions
                centre[1::2] = centre[0::2][: len(centre[1::2])] + 0.01
                size[1::2] = size[0::2][: len(size[1::2])]
            zero = torch.rand(n, 2, generator=g) < self.zero_size_share
            if b in self.invisible_rows:
                zero[:, 0] = True
            size = torch.where(zero, torch.zeros_like(size), size)
            target = {"boxes": torch.cat((centre, size), dim=1)}
            if self.mask_size is not None:
                h, w = self.mask_size
                target["masks"] = torch.rand(n, int(h * 3.5), int(w * 3.5), generator=g) < 0.3
                if self.invalid_mask_share:
                    target["is_valid_mask"] = torch.rand(n, generator=g) >= self.invalid_mask_share
            targets.append(target)

        # Predictions near the GT so that matching and IoU are non-trivial.
        def boxes() -> torch.Tensor:
            centre = torch.rand(batch, queries, 2, generator=g) * 0.6 + 0.2
            size = torch.rand(batch, queries, 2, generator=g) * 0.3 + 0.05
            for b, t in enumerate(targets):
                if len(t["boxes"]):
                    pick = torch.randint(len(t["boxes"]), (queries,), generator=g)
                    near = t["boxes"][pick].clone()
                    near[:, 2:] = near[:, 2:].clamp(min=0.02)
                    jitter = torch.randn(queries, 4, generator=g) * 0.02
                    close = torch.rand(queries, generator=g) < 0.5
                    centre[b, close] = (near[close, :2] + jitter[close, :2]).clamp(0.01, 0.99)
                    size[b, close] = (near[close, 2:] + jitter[close, 2:]).clamp(0.01, 0.99)
            return torch.cat((centre, size), dim=-1)

        def layer() -> dict:
            d = {"pred_logits": logits(batch, queries), "pred_boxes": boxes()}
            if self.presence:
                d["presence_logits"] = logits(batch, 1)
            if self.o2m:
                d["pred_logits_o2m"] = logits(batch, queries)
                d["pred_boxes_o2m"] = boxes()
            return d

        outputs = layer()
        outputs["aux_outputs"] = [layer() for _ in range(self.num_layers - 1)]
        if self.mask_size is not None:
            outputs["pred_masks"] = logits(batch, queries, *self.mask_size)
            if self.o2m:
                outputs["pred_masks_o2m"] = logits(batch, queries, *self.mask_size)
        return outputs, targets


def leaf_copy(outputs: dict) -> dict:
    """A copy of ``outputs`` whose tensors are fresh leaves requiring grad."""
    copy = {k: v.detach().clone().requires_grad_() for k, v in outputs.items() if k != "aux_outputs"}
    copy["aux_outputs"] = [leaf_copy(a) for a in outputs.get("aux_outputs", [])]
    return copy


def leaves(outputs: dict, prefix: str = "outputs") -> Iterator[tuple[str, torch.Tensor]]:
    """Every tensor of ``outputs`` with a readable name."""
    for k, v in outputs.items():
        if k == "aux_outputs":
            for i, a in enumerate(v):
                yield from leaves(a, f"{prefix}['aux_outputs'][{i}]")
        else:
            yield f"{prefix}['{k}']", v
