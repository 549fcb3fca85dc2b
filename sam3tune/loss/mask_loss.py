"""Mask terms of matched pairs: sigmoid focal loss (mean over pixels) and dice loss, per pair.

Predicted mask logits ``(R, h, w)`` are upsampled bilinearly (``align_corners=False``) to the GT size
``(H, W)``; the GT masks are binary. Dense mode evaluates every pixel, in chunks of pairs, with a fused
forward that also forms the gradient, so no full-resolution tensor outlives its chunk (memory stays
``O(chunk * H * W)`` whatever the number of pairs). Point-sampled mode (PointRend / Mask2Former) evaluates
``num_points`` points per pair, mostly where the prediction is uncertain, to save memory.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from sam3tune.loss.focal_loss import sigmoid_focal_loss

# Full-resolution elements processed at once by the dense mode (8 masks of 1008 x 1008).
_CHUNK_ELEMENTS = 8 * 1008 * 1008


def mask_pair_losses(
    pred_masks: Tensor,
    target_masks: Tensor,
    alpha: float = 0.25,
    gamma: float = 2.0,
    num_points: int | None = None,
    oversample_ratio: float = 3.0,
    importance_sample_ratio: float = 0.75,
) -> tuple[Tensor, Tensor]:
    """Focal and dice loss of each pair: ``(R,)`` and ``(R,)``.

    ``pred_masks`` ``(R, h, w)`` logits, ``target_masks`` ``(R, H, W)`` bool. Focal: ``alpha_t (1-p_t)^gamma
    BCE`` averaged over the pixels of the pair. Dice: ``1 - (2 sum(s y) + 1) / (sum(s) + sum(y) + 1)``
    with ``s = sigmoid``. ``num_points`` switches to point sampling.
    """
    if num_points is not None:
        return _sampled_mask_losses(
            pred_masks, target_masks, alpha, gamma, num_points, oversample_ratio, importance_sample_ratio
        )
    if pred_masks.shape[0] == 0:
        zero = pred_masks.sum(dim=(1, 2))
        return zero, zero
    return _DenseMaskLoss.apply(pred_masks, target_masks, alpha, gamma)


class _DenseMaskLoss(torch.autograd.Function):
    """Per-pair focal and dice loss at full resolution; the gradient is formed in the forward pass.

    With ``z = -x`` on GT pixels and ``z = x`` elsewhere, ``s = sigmoid(z) = 1 - p_t`` and
    ``BCE = softplus(z)``, so focal ``= alpha_t s^gamma softplus(z)`` and ``d focal / dz = alpha_t s^gamma
    (gamma (1 - s) softplus(z) + s)``. Dice with ``I = sum(sigmoid(x) y)``, ``S = sum(sigmoid(x))``,
    ``Y = sum(y)``: ``d dice / dx = (N / D^2 - 2 y / D) s (1 - s)``, ``N = 2I + 1``, ``D = S + Y + 1``.
    Both full-resolution gradient maps are pulled back through the (linear) upsampling at once, so the
    backward pass only scales two low-resolution maps per pair.
    """

    @staticmethod
    def forward(ctx, pred_masks: Tensor, target_masks: Tensor, alpha: float, gamma: float):  # noqa: D102
        num_pairs, low_size, size = pred_masks.shape[0], pred_masks.shape[1:], target_masks.shape[1:]
        num_pixels = size[0] * size[1]
        needs_grad = ctx.needs_input_grad[0]
        focal = pred_masks.new_empty(num_pairs)
        dice = pred_masks.new_empty(num_pairs)
        grads = pred_masks.new_empty(num_pairs, 2, *low_size) if needs_grad else None
        chunk = max(1, _CHUNK_ELEMENTS // num_pixels)
        for start in range(0, num_pairs, chunk):
            rows = slice(start, start + chunk)
            x = F.interpolate(pred_masks[rows, None], size=size, mode="bilinear", align_corners=False)[:, 0]
            y = target_masks[rows]
            z = torch.where(y, x.neg(), x)
            del x
            s = z.sigmoid()
            softplus = F.softplus(z)
            del z
            weight = s**gamma if gamma != 2 else s.square()
            alpha_t = torch.where(y, alpha, 1 - alpha).to(s.dtype)
            focal[rows] = (alpha_t * weight * softplus).sum(dim=(1, 2)) / num_pixels

            s_on_gt = torch.where(y, s, 0).sum(dim=(1, 2))
            y_sum = y.sum(dim=(1, 2)).to(s.dtype)
            intersection = y_sum - s_on_gt  # sum of sigmoid(x) over GT pixels
            prob_sum = s.sum(dim=(1, 2)) - 2 * s_on_gt + y_sum  # sum of sigmoid(x)
            numerator = 2 * intersection + 1
            denominator = prob_sum + y_sum + 1
            dice[rows] = 1 - numerator / denominator
            if not needs_grad:
                continue

            one_minus_s = 1 - s
            grad_z = weight * (gamma * one_minus_s * softplus + s) if gamma != 0 else s.clone()
            del softplus, weight
            grad_focal = grad_z.mul_(torch.where(y, -alpha, 1 - alpha).to(s.dtype)).div_(num_pixels)
            scale_all = (numerator / denominator.square())[:, None, None]
            scale_gt = scale_all - (2 / denominator)[:, None, None]
            grad_dice = torch.where(y, scale_gt, scale_all).mul_(s).mul_(one_minus_s)
            both = torch.stack((grad_focal, grad_dice), dim=1)
            grads[rows] = torch.ops.aten.upsample_bilinear2d_backward(
                both, list(size), list(both.shape[:2]) + list(low_size), False, None, None
            )
        if needs_grad:
            ctx.save_for_backward(grads)
        return focal, dice

    @staticmethod
    def backward(ctx, grad_focal: Tensor, grad_dice: Tensor):  # noqa: D102
        (grads,) = ctx.saved_tensors
        grad = grads[:, 0] * grad_focal[:, None, None] + grads[:, 1] * grad_dice[:, None, None]
        return grad, None, None, None


def _sampled_mask_losses(
    pred_masks: Tensor,
    target_masks: Tensor,
    alpha: float,
    gamma: float,
    num_points: int,
    oversample_ratio: float,
    importance_sample_ratio: float,
) -> tuple[Tensor, Tensor]:
    logits = pred_masks[:, None]
    with torch.no_grad():
        coords = _uncertain_point_coords(logits, num_points, oversample_ratio, importance_sample_ratio)
        y = _point_sample(target_masks[:, None].to(pred_masks.dtype), coords)
    x = _point_sample(logits, coords)
    focal = sigmoid_focal_loss(x, y, alpha, gamma).mean(dim=1)
    prob = x.sigmoid()
    dice = 1 - (2 * (prob * y).sum(dim=1) + 1) / (prob.sum(dim=1) + y.sum(dim=1) + 1)
    return focal, dice


def _uncertain_point_coords(
    logits: Tensor, num_points: int, oversample_ratio: float, importance_sample_ratio: float
) -> Tensor:
    """``(R, num_points, 2)`` coordinates in [0, 1]^2 (PointRend): of ``num_points * oversample_ratio``
    uniform points keep the ``importance_sample_ratio`` share closest to the decision boundary (smallest
    ``|logit|``), and fill up with fresh uniform points."""
    num_rows = logits.shape[0]
    candidates = torch.rand(num_rows, int(num_points * oversample_ratio), 2, device=logits.device)
    uncertainty = -_point_sample(logits, candidates).abs()
    num_uncertain = int(importance_sample_ratio * num_points)
    nearest = uncertainty.topk(num_uncertain, dim=1).indices
    coords = candidates.gather(1, nearest[..., None].expand(-1, -1, 2))
    num_random = num_points - num_uncertain
    if num_random > 0:
        coords = torch.cat((coords, torch.rand(num_rows, num_random, 2, device=logits.device)), dim=1)
    return coords


def _point_sample(maps: Tensor, coords: Tensor) -> Tensor:
    """Bilinear values of ``maps`` ``(R, 1, H, W)`` at ``coords`` ``(R, P, 2)`` (x, y in [0, 1]): ``(R, P)``."""
    grid = (2 * coords - 1)[:, :, None, :]
    return F.grid_sample(maps, grid, mode="bilinear", align_corners=False)[:, 0, :, 0]
