"""``Batch`` and the collate that builds it: each image once, a query -> image index, tokens, targets."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field, fields, replace

import torch

from sam3tune.data.dataset import Sample
from sam3tune.data.exemplars import PADDING_LABEL
from sam3tune.data.transforms import normalize

Tokenize = Callable[[list[str]], tuple[torch.Tensor, torch.Tensor]]
"""``tokenize(texts) -> (input_ids (B, L) int64, attention_mask (B, L) int64)``."""


@dataclass
class Batch:
    """A batch of images with all their prompt queries (``docs/architecture.md``).

    - ``pixel_values`` ``(I, 3, S, S)`` float32, mean = std = 0.5, one row per unique image;
    - ``image_index`` ``(B,)`` int64: query -> row of ``pixel_values``;
    - ``input_ids``, ``attention_mask`` ``(B, L)`` int64 from the tokenizer;
    - ``targets``: B dicts, ``boxes`` (n, 4) float32 cxcywh in [0, 1], optional ``masks``
      (n, M, M) bool and ``is_valid_mask`` (n,) bool;
    - ``image_ids`` ``(I,)`` int64 COCO image ids, ``orig_sizes`` ``(I, 2)`` int64 (height, width),
      ``category_ids`` ``(B,)`` int64 COCO category ids, ``prompts`` B prompt texts;
    - ``dropped``: what the transforms removed in this batch (see ``Sample.dropped``);
    - ``exemplar_boxes`` ``(B, K, 4)`` float32 cxcywh in [0, 1] (the targets' canvas) and
      ``exemplar_labels`` ``(B, K)`` int64 (1 positive, 0 negative, -1 padding): each query's exemplar
      boxes first, padding after; K = the most exemplars of any query. Both None when no query of the
      batch has an exemplar (a text-only batch);
    - ``supervised`` / ``distilled`` ``(B,)`` bool: which queries the criterion sees and which get the
      distillation loss (the forgetting remedies); None when every query is supervised and none distilled.
    """

    pixel_values: torch.Tensor
    image_index: torch.Tensor
    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    targets: list[dict[str, torch.Tensor]]
    image_ids: torch.Tensor
    orig_sizes: torch.Tensor
    category_ids: torch.Tensor
    prompts: list[str]
    dropped: dict[str, int] = field(default_factory=dict)
    exemplar_boxes: torch.Tensor | None = None
    exemplar_labels: torch.Tensor | None = None
    supervised: torch.Tensor | None = None
    distilled: torch.Tensor | None = None

    @property
    def num_images(self) -> int:
        return self.pixel_values.shape[0]

    @property
    def num_queries(self) -> int:
        return self.image_index.shape[0]

    def model_inputs(self) -> dict[str, torch.Tensor | None]:
        """The keyword arguments of the model's forward (``Sam3ForTraining``)."""
        return {
            "pixel_values": self.pixel_values,
            "image_index": self.image_index,
            "input_ids": self.input_ids,
            "attention_mask": self.attention_mask,
            "exemplar_boxes": self.exemplar_boxes,
            "exemplar_labels": self.exemplar_labels,
        }

    def query_chunks(self, size: int) -> Iterator[Batch]:
        """This batch as consecutive pieces of at most ``size`` queries, each holding only the images its
        queries ask about (``image_index`` renumbered): one forward per piece bounds the memory of a batch
        with thousands of prompts (an image is encoded again in each piece that asks about it)."""
        if self.num_queries <= size:
            yield self
            return
        for start in range(0, self.num_queries, size):
            rows = slice(start, start + size)
            used = torch.unique(self.image_index[rows])
            renumber = torch.full((self.num_images,), -1, dtype=torch.int64)
            renumber[used] = torch.arange(len(used))
            yield Batch(
                pixel_values=self.pixel_values[used],
                image_index=renumber[self.image_index[rows]],
                input_ids=self.input_ids[rows],
                attention_mask=self.attention_mask[rows],
                targets=self.targets[rows],
                image_ids=self.image_ids[used],
                orig_sizes=self.orig_sizes[used],
                category_ids=self.category_ids[rows],
                prompts=self.prompts[rows],
                exemplar_boxes=None if self.exemplar_boxes is None else self.exemplar_boxes[rows],
                exemplar_labels=None if self.exemplar_labels is None else self.exemplar_labels[rows],
            )

    def to(self, device: torch.device | str, non_blocking: bool = False) -> Batch:
        """A copy with every tensor (targets included) on ``device``."""
        return self._map(lambda t: t.to(device, non_blocking=non_blocking))

    def pin_memory(self) -> Batch:
        """A copy in pinned memory (DataLoader's ``pin_memory=True`` calls this)."""
        return self._map(lambda t: t.pin_memory())

    def _map(self, fn: Callable[[torch.Tensor], torch.Tensor]) -> Batch:
        changes = {
            f.name: fn(getattr(self, f.name))
            for f in fields(self)
            if isinstance(getattr(self, f.name), torch.Tensor)
        }
        changes["targets"] = [{k: fn(v) for k, v in t.items()} for t in self.targets]
        return replace(self, **changes)


def collate(samples: Sequence[Sample], tokenize: Tokenize) -> Batch:
    """Stack ``samples`` into a :class:`Batch`; use ``functools.partial(collate, tokenize=...)``.

    Images without any query (possible only when every target became empty) are left out.
    """
    samples = [s for s in samples if s.prompts]
    prompts = [p for s in samples for p in s.prompts]
    if not prompts:
        raise ValueError("collate got no query: every sample of the batch is empty")
    input_ids, attention_mask = tokenize(prompts)
    if input_ids.shape[0] != len(prompts) or attention_mask.shape != input_ids.shape:
        raise ValueError(
            f"tokenize returned input_ids {tuple(input_ids.shape)} / attention_mask "
            f"{tuple(attention_mask.shape)} for {len(prompts)} prompts; expected (B, L) each"
        )
    dropped: Counter = Counter()
    for s in samples:
        dropped.update(s.dropped)
    exemplar_boxes, exemplar_labels = _pad_exemplars(samples)
    supervised, distilled = _query_flags(samples)
    return Batch(
        pixel_values=normalize(torch.stack([s.image for s in samples])),
        image_index=torch.tensor([i for i, s in enumerate(samples) for _ in s.prompts], dtype=torch.int64),
        input_ids=input_ids.to(torch.int64),
        attention_mask=attention_mask.to(torch.int64),
        targets=[t for s in samples for t in s.targets],
        image_ids=torch.tensor([s.image_id for s in samples], dtype=torch.int64),
        orig_sizes=torch.tensor([s.orig_size for s in samples], dtype=torch.int64).reshape(-1, 2),
        category_ids=torch.tensor([c for s in samples for c in s.category_ids], dtype=torch.int64),
        prompts=prompts,
        dropped=dict(dropped),
        exemplar_boxes=exemplar_boxes,
        exemplar_labels=exemplar_labels,
        supervised=supervised,
        distilled=distilled,
    )


def _query_flags(samples: Sequence[Sample]) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """Per-query (supervised, distilled) flags as ``(B,)`` bool tensors, or (None, None) when no sample
    keeps flags (every query supervised, none distilled)."""
    if not any(s.supervised for s in samples):
        return None, None
    supervised, distilled = [], []
    for s in samples:
        if s.supervised and len(s.supervised) != len(s.prompts):
            raise ValueError(
                f"image {s.image_id}: {len(s.supervised)} query flags for {len(s.prompts)} queries"
            )
        supervised += s.supervised or [True] * len(s.prompts)
        distilled += s.distilled or [False] * len(s.prompts)
    return torch.tensor(supervised, dtype=torch.bool), torch.tensor(distilled, dtype=torch.bool)


def _pad_exemplars(samples: Sequence[Sample]) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """Per-query exemplars -> right-padded ``(B, K, 4)`` boxes and ``(B, K)`` labels, or (None, None)."""
    per_query = []
    for s in samples:
        if s.exemplar_boxes and len(s.exemplar_boxes) != len(s.prompts):
            raise ValueError(
                f"image {s.image_id}: {len(s.exemplar_boxes)} exemplar entries for {len(s.prompts)} queries"
            )
        per_query += list(zip(s.exemplar_boxes, s.exemplar_labels, strict=True)) or [None] * len(s.prompts)
    most = max((len(e[0]) for e in per_query if e is not None), default=0)
    if most == 0:
        return None, None
    boxes = torch.zeros(len(per_query), most, 4, dtype=torch.float32)
    labels = torch.full((len(per_query), most), PADDING_LABEL, dtype=torch.int64)
    for row, entry in enumerate(per_query):
        if entry is not None:
            boxes[row, : len(entry[0])] = entry[0]
            labels[row, : len(entry[1])] = entry[1]
    return boxes, labels
