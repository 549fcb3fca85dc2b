"""Semantic label-map datasets: the class list, queries per (image, class), targets through the geometry,
every skip, and the refusal of mixed instance + semantic datasets."""

from __future__ import annotations

import json

import numpy as np
import pytest
import yaml
from PIL import Image

from sam3tune.data import DataConfig, DataError
from sam3tune.data.semantic import (
    SemanticDataset,
    generate_semantic,
    is_semantic_dataset,
    load_semantic_split,
)
from sam3tune.data.synth import SynthConfig
from tests.data.conftest import write_image


def _dataset(root, labels: dict[str, np.ndarray], names=None, ignore=255, split="train"):
    (root / split / "labels").mkdir(parents=True, exist_ok=True)
    for stem, values in labels.items():
        Image.fromarray(values.astype(np.uint8), mode="L").save(root / split / "labels" / f"{stem}.png")
        write_image(root / split / "images" / f"{stem}.png", values.shape[1], values.shape[0])
    (root / "semantic.yaml").write_text(
        yaml.safe_dump({"names": names or {1: "road", 2: "car"}, "ignore_index": ignore})
    )
    return root


def test_one_query_per_class_with_union_targets_and_ignored_pixels(tmp_path):
    values = np.zeros((4, 4), dtype=np.uint8)
    values[0, :2] = 1  # road
    values[3, 3] = 255  # ignored
    root = _dataset(tmp_path, {"a": values})
    assert is_semantic_dataset(root)
    split = load_semantic_split(root, "train")
    assert split.prompts == {1: "road", 2: "car"} and not split.problems.counts
    sample = SemanticDataset(split, DataConfig(resolution=8, mask_resolution=4), train=False)[0]
    assert sample.prompts == ["road", "car"] and sample.category_ids == [1, 2]
    road, car = sample.targets
    assert road["boxes"].shape == (0, 4)
    assert road["semantic_mask"].numpy().tolist() == (values == 1).tolist()
    assert not car["semantic_mask"].any()  # absent class: an empty target, still queried
    assert road["semantic_valid"].numpy().tolist() == (values != 255).tolist()
    # at 8 x 8 every label pixel covers 2 x 2 target pixels (nearest neighbour)
    big = SemanticDataset(split, DataConfig(resolution=8, mask_resolution=8), train=False)[0]
    assert (
        big.targets[0]["semantic_mask"].numpy().tolist()
        == np.kron(values == 1, np.ones((2, 2))).astype(bool).tolist()
    )


def test_names_as_a_list_and_problems_counted(tmp_path):
    values = np.array([[0, 1], [3, 1]])
    root = _dataset(tmp_path, {"a": values, "b": np.zeros((2, 3))}, names=["background", "road"])
    write_image(root / "train" / "images" / "c.png", 2, 2)  # no label map
    Image.fromarray(np.zeros((2, 2), np.uint8)).save(root / "train" / "labels" / "orphan.png")
    Image.fromarray(np.zeros((3, 3), np.uint8)).save(root / "train" / "labels" / "b.png")  # wrong size
    split = load_semantic_split(root, "train")
    assert split.classes == {0: "background", 1: "road"}
    assert [i.file_name for i in split.images] == ["a.png"]
    counts = dict(split.problems.counts)
    assert counts == {
        "label_map_missing": 1,
        "label_without_image": 1,
        "image_size_mismatch": 1,
        "label_value_unknown": 1,
    }
    assert "indices [3]" in split.problems.examples["label_value_unknown"][0]


def test_rgb_label_maps_are_refused_per_image(tmp_path):
    root = _dataset(tmp_path, {"a": np.ones((2, 2)), "b": np.ones((2, 2))})
    Image.fromarray(np.zeros((2, 2, 3), np.uint8)).save(root / "train" / "labels" / "b.png")
    split = load_semantic_split(root, "train")
    assert [i.file_name for i in split.images] == ["a.png"]
    assert "one channel" in split.problems.examples["image_unreadable"][0]


@pytest.mark.parametrize(
    ("content", "fragment"),
    [
        ({"names": []}, "non-empty"),
        ({"names": {1: "a"}, "ignore_index": 1}, "ignore_index"),
        ({"names": {"x": "a"}}, "names entry 'x'"),
        ({"names": {1: "Traffic_Light", 2: "traffic light"}}, "both give the prompt 'traffic light'"),
    ],
)
def test_bad_class_lists(tmp_path, content, fragment):
    _dataset(tmp_path, {"a": np.ones((2, 2))})
    (tmp_path / "semantic.yaml").write_text(yaml.safe_dump(content))
    with pytest.raises(DataError, match=fragment):
        load_semantic_split(tmp_path, "train")


def test_mixed_instance_and_semantic_labels_are_refused(tmp_path):
    root = _dataset(tmp_path, {"a": np.ones((2, 2))})
    (root / "train" / "_annotations.coco.json").write_text("{}")
    with pytest.raises(DataError) as info:
        load_semantic_split(root, "train")
    assert info.value.kind == "mixed_labels" and "_annotations.coco.json" in str(info.value)


def test_synthetic_label_maps_match_the_drawn_categories(tmp_path):
    config = SynthConfig(image_size=(48, 48), splits=(("train", 3), ("valid", 2)), seed=3, jpeg_quality=95)
    assert generate_semantic(config, tmp_path) == {"train": 3, "valid": 2}
    split = load_semantic_split(tmp_path, "val")  # "val" finds "valid"
    assert split.prompts == {1: "red circle", 2: "blue triangle", 3: "green square", 4: "yellow star"}
    labels = np.asarray(Image.open(tmp_path / "train" / "labels" / "000000.png"))
    image = np.asarray(Image.open(tmp_path / "train" / "images" / "000000.jpg")).astype(int)
    red = labels == 1
    if red.sum() > 20:  # red circle pixels are red in the picture
        assert image[red][:, 0].mean() > 150 and image[red][:, 2].mean() < 110


def test_cli_synth_semantic(tmp_path, capsys):
    from sam3tune.cli import main

    assert (
        main(["data", "synth", str(tmp_path / "s"), "--images", "2", "image_size=[32,32]", "--semantic"]) == 0
    )
    assert is_semantic_dataset(tmp_path / "s")
    assert [i.file_name for i in load_semantic_split(tmp_path / "s", "train").images] == [
        "000000.jpg",
        "000001.jpg",
    ]
    assert "2 images with label maps" in capsys.readouterr().out


def test_instance_tools_name_a_semantic_dataset_for_what_it_is(tmp_path):
    from sam3tune.data import find_splits

    _dataset(tmp_path, {"a": np.ones((2, 2))})
    with pytest.raises(DataError, match="a semantic dataset"):
        find_splits(tmp_path)


def test_absent_classes_follow_negatives_in_training_only(tmp_path):
    values = np.zeros((4, 4), dtype=np.uint8)
    values[0, 0] = 2
    root = _dataset(tmp_path, {"a": values}, names={1: "a", 2: "b", 3: "c", 4: "d"})
    split = load_semantic_split(root, "train")
    assert SemanticDataset(split, DataConfig(resolution=8), train=True)[0].category_ids == [1, 2, 3, 4]
    assert SemanticDataset(split, DataConfig(resolution=8, negatives="none"), train=True)[0].category_ids == [
        2
    ]
    chosen = {
        tuple(
            SemanticDataset(split, DataConfig(resolution=8, negatives=1), train=True, seed=s)[0].category_ids
        )
        for s in range(12)
    }
    assert all(len(c) == 2 and 2 in c for c in chosen) and len(chosen) > 1  # one absent class, sampled
    assert SemanticDataset(split, DataConfig(resolution=8, negatives="none"), train=False)[
        0
    ].category_ids == [1, 2, 3, 4]


def test_data_inspect_reports_a_semantic_dataset(tmp_path, capsys):
    from sam3tune.cli import main

    values = np.zeros((4, 4), dtype=np.uint8)
    values[0, 0] = 2
    root = _dataset(tmp_path, {"a": values, "b": np.ones((4, 4))}, names={1: "road", 2: "car", 3: "bus"})
    write_image(root / "train" / "images" / "c.png", 4, 4)  # no label map
    assert main(["data", "inspect", str(root), "--json", "negatives=1"]) == 0
    (split,) = json.loads(capsys.readouterr().out)["splits"]
    assert split["images"] == {"listed": 3, "usable": 2, "with_queries": 2}
    assert split["annotations"] is None and split["masks"] is None
    assert [(c["name"], c["images"]) for c in split["categories"]] == [("road", 1), ("car", 1), ("bus", 0)]
    assert split["queries"] == {"positive": 2, "negative": 2, "negatives": 1, "exemplar": 0}
    assert [p["kind"] for p in split["problems"]] == ["label_map_missing"]
    assert main(["data", "inspect", str(root)]) == 0
    assert "shown in" in capsys.readouterr().out


# ---- what label maps silently assumed: orientation, degenerate maps, options of other kinds


def _turned_image(path, displayed: np.ndarray, orientation: int) -> None:
    """A JPEG that shows ``displayed`` (H, W, 3) once its EXIF ``orientation`` is applied."""
    stored = {6: np.rot90(displayed, k=1), 8: np.rot90(displayed, k=-1), 3: np.rot90(displayed, k=2)}
    exif = Image.Exif()
    exif[0x0112] = orientation
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.ascontiguousarray(stored[orientation])).save(path, exif=exif, quality=95)


def test_an_exif_rotated_image_pairs_with_a_label_map_in_its_displayed_frame(tmp_path):
    displayed = np.full((40, 20, 3), 200, np.uint8)  # 20 wide, 40 tall as displayed
    displayed[:, :10] = (250, 0, 0)  # left half red: class 1
    labels = np.zeros((40, 20), np.uint8)
    labels[:, :10] = 1
    root = _dataset(tmp_path, {"a": labels})
    (root / "train" / "images" / "a.png").unlink()
    _turned_image(root / "train" / "images" / "a.jpg", displayed, 6)
    split = load_semantic_split(root, "train")
    (image,) = split.images
    assert (image.width, image.height) == (20, 40) and not split.problems.counts
    sample = SemanticDataset(split, DataConfig(resolution=40, mask_resolution=40), train=False)[0]
    road = sample.targets[0]["semantic_mask"].numpy()
    pixels = sample.image.numpy().astype(int)  # (3, S, S) uint8, normalised later by the collate
    red = pixels[0] > pixels[2] + 100
    assert road[:, :20].mean() > 0.95 and road[:, 20:].mean() < 0.05  # the label map, displayed frame
    assert (red == road).mean() > 0.95  # ... on the red half of the picture the model sees


def test_a_label_map_in_the_stored_frame_of_a_rotated_image_is_refused_saying_so(tmp_path):
    displayed = np.full((40, 20, 3), 120, np.uint8)
    labels = np.ones((20, 40), np.uint8)  # the stored (unrotated) frame
    root = _dataset(tmp_path, {"a": labels})
    (root / "train" / "images" / "a.png").unlink()
    _turned_image(root / "train" / "images" / "a.jpg", displayed, 6)
    _dataset(tmp_path, {"b": np.ones((4, 4), np.uint8)})  # one usable image keeps the split usable
    split = load_semantic_split(root, "train")
    assert [i.file_name for i in split.images] == ["b.png"] and split.problems["image_size_mismatch"] == 1
    (example,) = split.problems.examples["image_size_mismatch"]
    assert str(root / "train" / "labels" / "a.png") in example
    assert "EXIF orientation 6" in example and "fits the image as stored" in example


def test_a_half_turned_image_is_used_with_a_warning(tmp_path):
    labels = np.ones((20, 40), np.uint8)
    root = _dataset(tmp_path, {"a": labels})
    (root / "train" / "images" / "a.png").unlink()
    _turned_image(root / "train" / "images" / "a.jpg", np.full((20, 40, 3), 90, np.uint8), 3)
    split = load_semantic_split(root, "train")
    assert len(split.images) == 1 and split.problems["image_orientation_ambiguous"] == 1


def test_label_maps_entirely_ignored_are_skipped_and_a_split_without_any_class_is_refused(tmp_path):
    root = _dataset(tmp_path, {"a": np.full((4, 4), 255), "b": np.array([[1, 0], [0, 0]])})
    split = load_semantic_split(root, "train")
    assert [i.file_name for i in split.images] == ["b.png"]
    assert split.problems["label_map_all_ignored"] == 1
    assert str(root / "train" / "labels" / "a.png") in split.problems.examples["label_map_all_ignored"][0]
    only_background = _dataset(tmp_path / "bg", {"a": np.zeros((4, 4)), "b": np.full((4, 4), 7)})
    with pytest.raises(DataError) as info:
        load_semantic_split(only_background, "train")
    assert info.value.kind == "no_usable_queries" and str(only_background / "train") in str(info.value)


def test_an_image_resolving_outside_its_split_is_skipped_unless_allowed(tmp_path):
    root = _dataset(tmp_path / "ds", {"a": np.ones((4, 4)), "b": np.ones((4, 4))})
    write_image(tmp_path / "secret.png", 4, 4)
    (root / "train" / "images" / "b.png").unlink()
    (root / "train" / "images" / "b.png").symlink_to(tmp_path / "secret.png")
    split = load_semantic_split(root, "train")
    assert [i.file_name for i in split.images] == ["a.png"] and split.problems["image_outside_folder"] == 1
    assert len(load_semantic_split(root, "train", follow_symlinks=True).images) == 2


@pytest.mark.parametrize(
    ("override", "key"),
    [
        ("data.exemplars.probability=0.5", "data.exemplars.probability=0.5"),
        ("data.masks=false", "data.masks=False"),
        ("data.max_objects_per_query=5", "data.max_objects_per_query=5"),
        ("data.prompts=map.yaml", "data.prompts=map.yaml"),
        ("data.shots=2", "data.shots=2"),
    ],
)
def test_options_of_instance_data_are_refused_on_label_maps(tmp_path, capsys, override, key):
    from sam3tune.cli import main

    root = _dataset(tmp_path / "ds", {"a": np.ones((4, 4))})
    runs = tmp_path / "runs"
    runs.mkdir()
    status = main(["train", "--data", str(root), "model.name=tiny", f"output_dir={runs}", override])
    err = capsys.readouterr().err
    assert status == 2 and key in err and "semantic label-map dataset" in err, err
    assert not any(runs.iterdir())
    assert main(["data", "inspect", str(root), override.removeprefix("data.")]) == 1
    assert key in capsys.readouterr().out
