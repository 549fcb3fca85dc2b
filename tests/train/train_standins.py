"""Small stand-ins for the model, criterion and data of sam3tune, used only by the train tests to
exercise the loop before / independently of the real packages."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn
from torch.utils.data import Dataset

from sam3tune.train.param_groups import ParamRole

SIZE = 8  # image side
QUERIES_PER_IMAGE = 2
NUM_PREDICTIONS = 3  # "Q"
VOCAB = 11
TOKENS = 4


@dataclass
class ToyBatch:
    pixel_values: torch.Tensor  # (I, 3, S, S)
    image_index: torch.Tensor  # (B,)
    input_ids: torch.Tensor  # (B, L)
    attention_mask: torch.Tensor  # (B, L)
    targets: list[dict[str, torch.Tensor]]

    def model_inputs(self) -> dict[str, torch.Tensor]:
        """The model's keyword arguments, as ``sam3tune.data.Batch.model_inputs`` (no exemplars)."""
        return {
            "pixel_values": self.pixel_values,
            "image_index": self.image_index,
            "input_ids": self.input_ids,
            "attention_mask": self.attention_mask,
        }


class ToyDataset(Dataset):
    """``n`` random images, each with two queries holding 1-2 boxes (cxcywh in [0, 1])."""

    def __init__(self, n: int, seed: int = 0) -> None:
        generator = torch.Generator().manual_seed(seed)
        self.images = torch.rand(n, 3, SIZE, SIZE, generator=generator)
        self.ids = torch.randint(1, VOCAB, (n, QUERIES_PER_IMAGE, TOKENS), generator=generator)
        self.boxes = []
        for _ in range(n):
            per_query = []
            for _ in range(QUERIES_PER_IMAGE):
                count = int(torch.randint(1, 3, (1,), generator=generator))
                centres = 0.25 + 0.5 * torch.rand(count, 2, generator=generator)
                sizes = 0.1 + 0.3 * torch.rand(count, 2, generator=generator)
                per_query.append(torch.cat([centres, sizes], dim=1))
            self.boxes.append(per_query)

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> dict:
        return {"image": self.images[index], "ids": self.ids[index], "boxes": self.boxes[index]}


def toy_collate(samples: list[dict]) -> ToyBatch:
    image_index, ids, targets = [], [], []
    for row, sample in enumerate(samples):
        for query in range(QUERIES_PER_IMAGE):
            image_index.append(row)
            ids.append(sample["ids"][query])
            targets.append({"boxes": sample["boxes"][query]})
    input_ids = torch.stack(ids)
    return ToyBatch(
        pixel_values=torch.stack([s["image"] for s in samples]),
        image_index=torch.tensor(image_index),
        input_ids=input_ids,
        attention_mask=torch.ones_like(input_ids),
        targets=targets,
    )


class _Block(nn.Module):
    def __init__(self, width: int) -> None:
        super().__init__()
        self.fc = nn.Linear(width, width)
        self.norm = nn.LayerNorm(width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(x + torch.tanh(self.fc(x)))


class _Vision(nn.Module):
    def __init__(self, width: int, blocks: int) -> None:
        super().__init__()
        self.backbone = nn.Module()
        self.backbone.patch = nn.Linear(3 * SIZE * SIZE, width)
        self.backbone.position_embeddings = nn.Parameter(torch.zeros(width))
        self.backbone.layer_norm = nn.LayerNorm(width)
        self.backbone.layers = nn.ModuleList(_Block(width) for _ in range(blocks))
        self.neck = nn.Linear(width, width)

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        x = self.backbone.patch(pixels.flatten(1)) + self.backbone.position_embeddings
        x = self.backbone.layer_norm(x)
        for layer in self.backbone.layers:
            x = layer(x)
        return self.neck(x)


class ToyModel(nn.Module):
    """Parameter names laid out like HF ``Sam3Model`` (vision trunk blocks, text encoder, decoder and
    heads), with dropout so that resume tests depend on the RNG."""

    num_vit_blocks = 2

    def __init__(self, width: int = 16, dropout: float = 0.1) -> None:
        super().__init__()
        self.vision_encoder = _Vision(width, self.num_vit_blocks)
        self.text_encoder = nn.Module()
        self.text_encoder.embed = nn.Embedding(VOCAB, width)
        self.text_encoder.layer_norm = nn.LayerNorm(width)
        self.text_projection = nn.Linear(width, width)
        self.detr_decoder = nn.Module()
        self.detr_decoder.query_embed = nn.Parameter(torch.randn(NUM_PREDICTIONS, width) * 0.1)
        self.detr_decoder.fuse = nn.Linear(2 * width, width)
        self.detr_decoder.dropout = nn.Dropout(dropout)
        self.detr_decoder.box_head = nn.Linear(width, 4)
        self.detr_decoder.class_head = nn.Linear(width, 1)

    def forward(self, pixel_values, image_index, input_ids, attention_mask) -> dict[str, torch.Tensor]:
        image = self.vision_encoder(pixel_values)[image_index]  # (B, W)
        tokens = self.text_encoder.embed(input_ids) * attention_mask[..., None]
        text = self.text_projection(self.text_encoder.layer_norm(tokens.mean(1)))  # (B, W)
        fused = torch.relu(self.detr_decoder.fuse(torch.cat([image, text], -1)))  # (B, W)
        queries = self.detr_decoder.dropout(fused[:, None, :] + self.detr_decoder.query_embed[None])
        return {
            "pred_logits": self.detr_decoder.class_head(queries).squeeze(-1),  # (B, Q)
            "pred_boxes": self.detr_decoder.box_head(queries).sigmoid(),  # (B, Q, 4)
        }


def toy_role(name: str) -> ParamRole:
    if name.startswith("vision_encoder.backbone."):
        rest = name.removeprefix("vision_encoder.backbone.")
        if rest.startswith("layers."):
            return ParamRole("vision", vit_depth=int(rest.split(".")[1]) + 1)
        if rest.startswith(("patch", "layer_norm")):
            return ParamRole("vision", vit_depth=0)
        return ParamRole("vision")
    if name.startswith("vision_encoder."):
        return ParamRole("vision")
    if name.startswith(("text_encoder.", "text_projection.")):
        return ParamRole("text")
    return ParamRole("transformer", is_adapter="lora_" in name)


class ToyCriterion:
    """Boxes matched in order to the first predictions: L1 summed and divided by the number of boxes
    (``global``: averaged over processes when a process group exists, like the official
    ``num_boxes``), plus a BCE on the logits averaged over queries and predictions."""

    def __init__(
        self, nan_at_calls: set[int] = frozenset(), per_query_mean: bool = False, global_norm: bool = True
    ) -> None:
        self.calls = 0
        self.global_norm = global_norm
        self.nan_at_calls = nan_at_calls
        self.per_query_mean = per_query_mean  # loss_bbox = mean over queries of the mean L1 per box

    def __call__(self, outputs: dict, targets: list[dict]) -> dict[str, torch.Tensor]:
        self.calls += 1
        num_boxes = torch.tensor(float(sum(len(t["boxes"]) for t in targets)))
        if self.global_norm and dist.is_available() and dist.is_initialized():
            dist.all_reduce(num_boxes)
            num_boxes = num_boxes / dist.get_world_size()
        num_boxes = num_boxes.clamp(min=1)
        l1 = outputs["pred_boxes"].new_zeros(())
        labels = torch.zeros_like(outputs["pred_logits"])
        for row, target in enumerate(targets):
            n = len(target["boxes"])
            per_query = (outputs["pred_boxes"][row, :n] - target["boxes"]).abs().sum()
            l1 = l1 + (per_query / n / len(targets) if self.per_query_mean else per_query)
            labels[row, :n] = 1.0
        loss_bbox = l1 if self.per_query_mean else l1 / num_boxes
        loss_ce = F.binary_cross_entropy_with_logits(outputs["pred_logits"], labels)
        loss = 5.0 * loss_bbox + 2.0 * loss_ce
        if self.calls in self.nan_at_calls:
            loss = loss * float("nan")
        return {"loss": loss, "loss_bbox": loss_bbox.detach(), "loss_ce": loss_ce.detach()}
