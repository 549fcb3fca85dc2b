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

    With ``z = x (1 - 2y)`` (the logit, sign-flipped on GT pixels), ``s = sigmoid(z) = 1 - p_t`` and
    ``BCE = softplus(z)``, so focal ``= alpha_t s^gamma softplus(z)`` and, as ``alpha_t dz/dx = (1 - alpha
    - y)``, ``d focal / dx = (1 - alpha - y) s^gamma (gamma (1 - s) softplus(z) + s) / P``. Dice with
    ``I = sum(sigmoid(x) y)``, ``S = sum(sigmoid(x))``, ``Y = sum(y)``: ``d dice / dx = (N / D^2 - 2 y / D)
    s (1 - s)`` with ``N = 2I + 1``, ``D = S + Y + 1``. Both full-resolution gradient maps are pulled back
    through the (linear) upsampling at once, so the backward pass only scales two low-resolution maps per
    pair. Work buffers are reused across chunks and every step is one pass over memory.
    """

    @staticmethod
    def forward(ctx, pred_masks: Tensor, target_masks: Tensor, alpha: float, gamma: float):
        num_pairs, low_size, size = pred_masks.shape[0], pred_masks.shape[1:], target_masks.shape[1:]
        num_pixels = size[0] * size[1]
        needs_grad = ctx.needs_input_grad[0]
        focal = pred_masks.new_empty(num_pairs)
        dice = pred_masks.new_empty(num_pairs)
        grads = pred_masks.new_empty(num_pairs, 2, *low_size) if needs_grad else None
        chunk = min(num_pairs, max(1, _CHUNK_ELEMENTS // num_pixels))
        y_buffer = pred_masks.new_empty(chunk, *size)
        pair_buffer = pred_masks.new_empty(chunk, 2, *size)  # [w, s], later [focal grad, dice grad]
        softplus_buffer = pred_masks.new_empty(chunk, *size)
        square_buffer = pred_masks.new_empty(chunk, *size)
        for start in range(0, num_pairs, chunk):
            rows = slice(start, min(start + chunk, num_pairs))
            n = rows.stop - rows.start
            y = y_buffer[:n]
            y.copy_(target_masks[rows])
            pair = pair_buffer[:n]
            w, s = pair[:, 0], pair[:, 1]
            z = F.interpolate(pred_masks[rows, None], size=size, mode="bilinear", align_corners=False)[:, 0]
            z.addcmul_(z, y, value=-2)
            torch.sigmoid(z, out=s)
            softplus = torch._C._nn.softplus(z, 1, 20, out=softplus_buffer[:n])
            square = torch.mul(s, s, out=square_buffer[:n])
            s_gamma = square if gamma == 2 else s.pow(gamma)
            torch.mul(s_gamma, softplus, out=w)

            flat = pair.view(n, 2, num_pixels)
            sums = flat.sum(dim=2)  # sum(w), sum(s)
            on_gt = torch.bmm(flat, y.view(n, num_pixels, 1))[..., 0]  # sum(w y), sum(s y)
            y_sum = y.view(n, num_pixels).sum(dim=1)
            focal[rows] = ((1 - alpha) * (sums[:, 0] - on_gt[:, 0]) + alpha * on_gt[:, 0]) / num_pixels
            intersection = y_sum - on_gt[:, 1]  # sum of sigmoid(x) over GT pixels
            prob_sum = sums[:, 1] - 2 * on_gt[:, 1] + y_sum  # sum of sigmoid(x)
            numerator = 2 * intersection + 1
            denominator = prob_sum + y_sum + 1
            dice[rows] = 1 - numerator / denominator
            if not needs_grad:
                continue

            # Focal: (1 - alpha - y) / P * (s^gamma s + gamma w - gamma w s), written over z's buffer.
            grad_focal = torch.mul(s_gamma, s, out=z)
            if gamma != 0:
                grad_focal.add_(w, alpha=gamma).addcmul_(w, s, value=-gamma)
            if alpha != 1:
                grad_focal.mul_((1 - alpha) / num_pixels).addcmul_(grad_focal, y, value=-1 / (1 - alpha))
            else:
                grad_focal.mul_(y).mul_(-1 / num_pixels)
            w.copy_(grad_focal)
            # Dice: s (1 - s) (N / D^2 - 2 y / D), in place of s.
            per_row = numerator / denominator.square()
            coefficient = torch.addcmul(
                per_row[:, None, None], y, (2 / denominator)[:, None, None], value=-1, out=softplus
            )
            s.sub_(square).mul_(coefficient)
            grads[rows] = torch.ops.aten.upsample_bilinear2d_backward(
                pair, list(size), [n, 2, *low_size], False, None, None
            )
        if needs_grad:
            ctx.save_for_backward(grads)
        return focal, dice

    @staticmethod
    def backward(ctx, grad_focal: Tensor, grad_dice: Tensor):
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
    """Bilinear values of ``maps`` ``(R, 1, H, W)`` at ``coords`` ``(R, P, 2)`` (x, y in [0, 1]), ``(R, P)``.

    Outside the image centres ``grid_sample`` pads with zeros, as the official point sampling does.
    """
    grid = (2 * coords - 1)[:, :, None, :]
    return F.grid_sample(maps, grid, mode="bilinear", align_corners=False)[:, 0, :, 0]
