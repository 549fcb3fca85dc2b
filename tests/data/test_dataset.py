"""End-to-end exactness: a hand-made two-image dataset through load, queries, transforms, collate."""

from __future__ import annotations

import functools

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader, DistributedSampler

from sam3tune.data import DataConfig, QueryDataset, build_eval_dataset, build_train_dataset, collate
from sam3tune.data.transforms import Geometry
from tests.data.conftest import basic_coco, word_tokenize, write_split

# Image A: 40 x 20, left half red, right half blue; one "red box" object (polygon rectangle).
# Image B: 20 x 20; a "blue dot" given as uncompressed RLE and a bbox-only "red box".
RLE_COUNTS = [202, 4, 16, 4, 16, 4, 16, 4, 16, 4, 114]  # rows 2..5 x cols 10..14, column-major


def _two_image_dataset(root):
    folder = root / "train"
    folder.mkdir(parents=True)
    a = np.zeros((20, 40, 3), dtype=np.uint8)
    a[:, :20] = (255, 0, 0)
    a[:, 20:] = (0, 0, 255)
    Image.fromarray(a).save(folder / "a.png")
    Image.fromarray(np.full((20, 20, 3), 128, dtype=np.uint8)).save(folder / "b.png")
    coco = {
        "images": [
            {"id": 1, "file_name": "a.png", "width": 40, "height": 20},
            {"id": 2, "file_name": "b.png", "width": 20, "height": 20},
        ],
        "categories": [{"id": 1, "name": "red_box"}, {"id": 2, "name": "Blue-Dot"}],
        "annotations": [
            {"id": 1, "image_id": 1, "category_id": 1, "bbox": [5, 4, 10, 8], "iscrowd": 0,
             "segmentation": [[5, 4, 15, 4, 15, 12, 5, 12]]},
            {"id": 2, "image_id": 2, "category_id": 2, "bbox": [10, 2, 5, 4], "iscrowd": 0,
             "segmentation": {"size": [20, 20], "counts": RLE_COUNTS}},
            {"id": 3, "image_id": 2, "category_id": 1, "bbox": [0, 10, 20, 10], "iscrowd": 0},
        ],
    }  # fmt: skip
    write_split(folder, coco, make_images=False)
    return root


GEOMETRIES = {
    0: Geometry(resolution=64, side=32, left=8, top=16, flip=True),
    1: Geometry(resolution=64, side=48, left=0, top=16, flip=False),
}


@pytest.mark.parametrize("mask_resolution", [64, 32])
def test_two_images_exact_boxes_masks_pixels(tmp_path, monkeypatch, mask_resolution):
    root = _two_image_dataset(tmp_path)
    config = DataConfig(root=root, resolution=64, mask_resolution=mask_resolution, hflip=True)
    dataset = build_train_dataset(config, progress=False)
    monkeypatch.setattr(QueryDataset, "geometry", lambda self, index: GEOMETRIES[index])
    batch = collate([dataset[0], dataset[1]], word_tokenize)

    assert batch.prompts == ["red box", "blue dot", "red box", "blue dot"]
    assert batch.image_index.tolist() == [0, 0, 1, 1]
    assert batch.category_ids.tolist() == [1, 2, 1, 2]
    assert batch.image_ids.tolist() == [1, 2]
    assert batch.orig_sizes.tolist() == [[20, 40], [20, 20]]
    assert batch.input_ids.tolist() == [[3, 3], [4, 3], [3, 3], [4, 3]]

    # A, flipped: x 5..15 -> 25..35, * 0.8 + 8 -> 28..36; y 4..12 * 1.6 + 16 -> 22.4..35.2; / 64.
    torch.testing.assert_close(batch.targets[0]["boxes"], torch.tensor([[0.5, 0.45, 0.125, 0.2]]))
    assert batch.targets[1]["boxes"].shape == (0, 4)  # "blue dot" is a negative on image A
    # B: scale 2.4, top 16. RLE object x 10..15 -> 24..36, y 2..6 -> 20.8..30.4; bbox-only 0..20 x 10..20.
    torch.testing.assert_close(batch.targets[2]["boxes"], torch.tensor([[0.375, 0.8125, 0.75, 0.375]]))
    torch.testing.assert_close(batch.targets[3]["boxes"], torch.tensor([[0.46875, 0.4, 0.1875, 0.15]]))

    m = mask_resolution
    expected_a = torch.zeros(m, m, dtype=torch.bool)
    expected_b = torch.zeros(m, m, dtype=torch.bool)
    if m == 64:  # pixel centres mapped back by hand (see the docstring of transforms)
        expected_a[22:35, 28:36] = True
        expected_b[21:30, 24:36] = True
    else:
        expected_a[11:18, 14:18] = True
        expected_b[10:15, 12:18] = True
    assert torch.equal(batch.targets[0]["masks"][0], expected_a)
    assert batch.targets[0]["is_valid_mask"].tolist() == [True]
    assert batch.targets[1]["masks"].shape == (0, m, m)
    assert torch.equal(batch.targets[3]["masks"][0], expected_b)
    assert batch.targets[2]["is_valid_mask"].tolist() == [False]  # bbox-only object
    assert not batch.targets[2]["masks"].any()

    pixels = batch.pixel_values
    assert pixels.shape == (2, 3, 64, 64) and pixels.dtype == torch.float32
    black, red, blue = [-1.0, -1.0, -1.0], [1.0, -1.0, -1.0], [-1.0, -1.0, 1.0]
    assert pixels[0, :, 30, 4].tolist() == black  # left padding
    assert pixels[0, :, 8, 20].tolist() == black  # top padding
    assert pixels[0, :, 30, 12].tolist() == blue  # flipped: blue half now on the left
    assert pixels[0, :, 30, 35].tolist() == red
    assert pixels[0, :, 50, 20].tolist() == black  # bottom padding (rows 48..63)
    assert pixels[1, :, 30, 30].tolist() == pytest.approx([128 / 127.5 - 1] * 3, abs=1e-6)
    assert pixels[1, :, 30, 50].tolist() == black  # right padding (cols 48..63)


def test_mask_b_at_32_by_hand():
    """Cross-check of the 32-px expectation for image B used above, from the mapping formula."""
    # target row u (32 grid) has canvas centre 2u + 1; source row floor((2u + 1 - 16) / 2.4) in 2..5
    rows = [u for u in range(32) if 0 <= 2 * u + 1 - 16 < 48 and 2 <= (2 * u + 1 - 16) // 2.4 <= 5]
    cols = [v for v in range(32) if 0 <= 2 * v + 1 < 48 and 10 <= (2 * v + 1) // 2.4 <= 14]
    assert rows == list(range(10, 15)) and cols == list(range(12, 18))


def test_eval_dataset_square_resize(tmp_path):
    root = _two_image_dataset(tmp_path)
    config = DataConfig(root=root, val="train", resolution=64, masks=False)
    dataset = build_eval_dataset(config, progress=False)
    sample = dataset[1]
    # B resized to 64 x 64: RLE object x 10..15 -> 32..48, y 2..6 -> 6.4..19.2
    torch.testing.assert_close(sample.targets[1]["boxes"], torch.tensor([[0.625, 0.2, 0.25, 0.2]]))
    assert "masks" not in sample.targets[1]
    assert sample.image[:, 0, 0].tolist() == [128, 128, 128]  # no padding


def test_augmentation_is_pure_function_of_seed_epoch_index(basic_split):
    config = DataConfig(root=basic_split, resolution=64, mask_resolution=16, hflip=True, negatives=1)
    first = build_train_dataset(config, seed=7, progress=False)
    second = build_train_dataset(config, seed=7, progress=False)
    first.set_epoch(3)
    second.set_epoch(3)
    for index in reversed(range(len(first))):  # order of access does not matter
        a, b = first[index], second[index]
        assert torch.equal(a.image, b.image)
        assert a.category_ids == b.category_ids
        for ta, tb in zip(a.targets, b.targets, strict=True):
            assert torch.equal(ta["boxes"], tb["boxes"]) and torch.equal(ta["masks"], tb["masks"])
    geometries = {first.geometry(0)}
    for epoch in range(1, 6):
        first.set_epoch(epoch)
        geometries.add(first.geometry(0))
    assert len(geometries) > 1  # a new epoch draws new augmentations
    other_seed = build_train_dataset(config, seed=8, progress=False)
    other_seed.set_epoch(3)
    first.set_epoch(3)
    assert [first.geometry(i) for i in range(3)] != [other_seed.geometry(i) for i in range(3)]


def test_dataloader_workers_and_distributed_shards_agree(basic_split):
    config = DataConfig(root=basic_split, resolution=32, mask_resolution=16, hflip=True)
    dataset = build_train_dataset(config, seed=3, progress=False)
    dataset.set_epoch(2)
    collate_fn = functools.partial(collate, tokenize=word_tokenize)
    shards = []
    for rank in range(2):
        sampler = DistributedSampler(dataset, num_replicas=2, rank=rank, shuffle=True, seed=5)
        sampler.set_epoch(2)
        loader = DataLoader(dataset, batch_size=2, sampler=sampler, collate_fn=collate_fn, num_workers=rank)
        shards.append([b for b in loader])
    ids = [i for shard in shards for b in shard for i in b.image_ids.tolist()]
    assert len(ids) == 4 and set(ids) == {1, 2, 3}  # DistributedSampler pads 3 images to 2 x 2
    # the batch a worker process builds equals the one built in this process
    sampler = DistributedSampler(dataset, num_replicas=2, rank=1, shuffle=True, seed=5)
    sampler.set_epoch(2)
    again = collate_fn([dataset[i] for i in list(sampler)[:2]])
    assert torch.equal(again.pixel_values, shards[1][0].pixel_values)
    assert again.prompts == shards[1][0].prompts


def test_batch_to_and_pin_memory(basic_split):
    config = DataConfig(root=basic_split, resolution=32, mask_resolution=8)
    dataset = build_train_dataset(config, progress=False)
    batch = collate([dataset[0], dataset[1]], word_tokenize)
    moved = batch.to("cpu")
    assert moved.targets[0]["boxes"] is not None and moved.prompts == batch.prompts
    assert torch.equal(moved.pixel_values, batch.pixel_values)
    assert moved.num_images == 2 and moved.num_queries == 4
    meta = batch.to("meta")  # every tensor, targets included, follows the device
    tensors = [meta.pixel_values, meta.image_index, meta.input_ids, meta.attention_mask, meta.image_ids]
    tensors += [meta.orig_sizes, meta.category_ids, *(v for t in meta.targets for v in t.values())]
    assert all(t.device.type == "meta" for t in tensors) and batch.pixel_values.device.type == "cpu"
    if torch.cuda.is_available():
        pinned = batch.pin_memory()
        assert pinned.pixel_values.is_pinned() and pinned.targets[0]["masks"].is_pinned()


def test_collate_rejects_bad_tokenizer(basic_split):
    dataset = build_train_dataset(DataConfig(root=basic_split, resolution=32, masks=False), progress=False)
    with pytest.raises(ValueError, match="tokenize returned"):
        collate([dataset[0]], lambda texts: (torch.zeros(1, 4), torch.zeros(1, 4)))


def test_negative_sampling_k_is_deterministic_and_bounded(tmp_path):
    coco = basic_coco()
    coco["categories"] += [{"id": i, "name": f"thing {i}"} for i in range(3, 9)]
    coco["annotations"] += [
        {"id": 100 + i, "image_id": 2, "category_id": i, "bbox": [1, 1, 3, 3], "iscrowd": 0}
        for i in range(3, 9)
    ]
    write_split(tmp_path / "train", coco)
    config = DataConfig(root=tmp_path, resolution=32, masks=False, negatives=2)
    dataset = build_train_dataset(config, seed=1, progress=False)
    # image 1 has categories 1, 2: candidates 3..8; it gets its 2 positives + 2 sampled negatives
    fresh = QueryDataset(dataset.plan, config, train=True, seed=1)
    draws = set()
    for epoch in range(8):
        dataset.set_epoch(epoch)
        fresh.set_epoch(epoch)
        ids = dataset[0].category_ids
        assert ids[:2] == [1, 2] and len(ids) == 4 and set(ids[2:]) <= set(range(3, 9))
        assert fresh[0].category_ids == ids
        draws.add(tuple(ids))
    assert len(draws) > 1
    # without augmentation: the evaluation resize, but still the k sampled negatives of training
    plain = build_train_dataset(config, seed=1, progress=False, augment=False)
    for epoch in range(3):
        plain.set_epoch(epoch)
        dataset.set_epoch(epoch)
        assert plain.geometry(0) == Geometry(resolution=32, side=32, left=0, top=0, flip=False)
        assert plain[0].category_ids == dataset[0].category_ids
    # image 1: min(2, 6 absent) = 2; image 2 (1, 3..8): only category 2 absent -> 1; image 3: min(2, 8)
    assert dataset.plan.num_negative == 2 + 1 + 2
    assert len(dataset[1].category_ids) == 8


def test_objects_and_masks_that_become_empty_are_dropped_and_counted(tmp_path):
    coco = basic_coco()
    # image 2's only object: 0.0001 px wide -> less than 0.01 canvas px -> dropped, its query too
    coco["annotations"][2].update(bbox=[4, 4, 0.0001, 6], segmentation=[])
    # image 1, "blue dot": a 1-pixel polygon that no pixel centre of a 4 x 4 target grid hits
    coco["annotations"][1].update(bbox=[16, 4, 1, 1], segmentation=[[16, 4, 17, 4, 17, 5, 16, 5]])
    write_split(tmp_path / "train", coco)
    config = DataConfig(root=tmp_path, val="train", resolution=32, mask_resolution=4)
    dataset = build_eval_dataset(config, progress=False)
    first, second = dataset[0], dataset[1]
    assert second.category_ids == [2] and second.dropped == {
        "empty_objects": 1,
        "empty_queries": 1,
        "empty_masks": 0,
    }
    assert first.dropped["empty_masks"] == 1
    assert first.targets[1]["is_valid_mask"].tolist() == [False] and first.targets[1]["boxes"].shape == (1, 4)
    batch = collate([first, second], word_tokenize)
    assert batch.dropped == {"empty_objects": 1, "empty_queries": 1, "empty_masks": 1}
    assert batch.category_ids.tolist() == [1, 2, 2]
