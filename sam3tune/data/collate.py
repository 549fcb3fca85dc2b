"""``Batch`` and the collate that builds it: each image once, a query -> image index, tokens, targets."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, fields, replace

import torch

from sam3tune.data.dataset import Sample
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
    - ``dropped``: what the transforms removed in this batch (see ``Sample.dropped``).
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

    @property
    def num_images(self) -> int:
        return self.pixel_values.shape[0]

    @property
    def num_queries(self) -> int:
        return self.image_index.shape[0]

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
    )
