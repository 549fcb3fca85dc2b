"""``roi_align`` against the operator's definition evaluated point by point, and on linear features."""

import math

import torch

from sam3tune.model.roi_align import install_roi_align, roi_align


def _bilinear(feature, y, x):
    """One point of the legacy RoIAlign interpolation on an (H, W) map."""
    height, width = feature.shape
    if y < -1.0 or y > height or x < -1.0 or x > width:
        return 0.0
    y, x = max(y, 0.0), max(x, 0.0)
    y0, x0 = int(y), int(x)
    if y0 >= height - 1:
        y0 = y1 = height - 1
        y = float(y0)
    else:
        y1 = y0 + 1
    if x0 >= width - 1:
        x0 = x1 = width - 1
        x = float(x0)
    else:
        x1 = x0 + 1
    ly, lx = y - y0, x - x0
    return float(
        (1 - ly) * (1 - lx) * feature[y0, x0]
        + (1 - ly) * lx * feature[y0, x1]
        + ly * (1 - lx) * feature[y1, x0]
        + ly * lx * feature[y1, x1]
    )


def _reference(feature, box, size):
    x0, y0, x1, y1 = box
    w, h = max(x1 - x0, 1.0), max(y1 - y0, 1.0)
    gh, gw = math.ceil(h / size), math.ceil(w / size)
    out = torch.zeros(size, size, dtype=torch.float64)
    for i in range(size):
        for j in range(size):
            total = 0.0
            for a in range(gh):
                for b in range(gw):
                    y = y0 + i * h / size + (a + 0.5) * h / size / gh
                    x = x0 + j * w / size + (b + 0.5) * w / size / gw
                    total += _bilinear(feature, y, x)
            out[i, j] = total / max(gh * gw, 1)
    return out


def test_matches_the_definition_point_by_point():
    generator = torch.Generator().manual_seed(0)
    features = torch.randn(2, 3, 9, 11, generator=generator, dtype=torch.float64)
    boxes = [
        torch.tensor([[1.3, 2.2, 7.9, 8.4], [0.0, 0.0, 11.0, 9.0]], dtype=torch.float64),
        # small (width < 1), partly outside, entirely inside the last row/column, degenerate
        torch.tensor(
            [[4.2, 4.1, 4.6, 4.3], [-2.5, -0.5, 3.0, 12.0], [10.2, 8.3, 10.9, 8.9], [5.0, 5.0, 5.0, 5.0]],
            dtype=torch.float64,
        ),
    ]
    pooled = roi_align(features, boxes, 4)
    assert pooled.shape == (6, 3, 4, 4)
    row = 0
    for image, image_boxes in enumerate(boxes):
        for box in image_boxes.tolist():
            for channel in range(3):
                expected = _reference(features[image, channel], box, 4)
                torch.testing.assert_close(pooled[row, channel], expected, rtol=1e-12, atol=1e-12)
            row += 1


def test_linear_features_give_the_bin_centres():
    ys, xs = torch.meshgrid(torch.arange(16.0), torch.arange(16.0), indexing="ij")
    features = torch.stack([ys, xs])[None]  # value = coordinate of the pixel
    pooled = roi_align(features, [torch.tensor([[2.0, 4.0, 10.0, 12.0]])], 2)
    # bins of 4 px: centres at 6 and 10 (y), 4 and 8 (x)
    torch.testing.assert_close(pooled[0, 0], torch.tensor([[6.0, 6.0], [10.0, 10.0]]))
    torch.testing.assert_close(pooled[0, 1], torch.tensor([[4.0, 8.0], [4.0, 8.0]]))


def test_gradient_reaches_the_features_and_install_is_idempotent():
    features = torch.randn(1, 2, 6, 6, requires_grad=True)
    roi_align(features, [torch.tensor([[1.0, 1.0, 4.0, 5.0]])], 3).sum().backward()
    assert features.grad.abs().sum() > 0
    first = install_roi_align()
    assert install_roi_align() == first
