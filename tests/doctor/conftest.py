import json
import shutil
from pathlib import Path

import pytest

from sam3tune.config import load_config
from sam3tune.data.synth import SynthConfig, generate
from sam3tune.train.config import TrainConfig


@pytest.fixture(scope="session")
def shapes(tmp_path_factory) -> Path:
    """A small healthy dataset: big coloured shapes (no sub-patch object at 64 px), polygon masks."""
    root = tmp_path_factory.mktemp("shapes")
    generate(
        SynthConfig(
            image_size=(96, 96),
            objects_per_image=(2, 4),
            object_size=(0.3, 0.45),
            empty_fraction=0.0,
            allow_overlap=True,
            splits=(("train", 6),),
        ),
        root,
        progress=False,
    )
    return root


def run_config(root: Path, *overrides: str) -> TrainConfig:
    """The tiny model on ``root`` at 64 px on the CPU, then ``overrides``."""
    base = [f"data.root={root}", "model.name=tiny", "loop.device=cpu", "loop.batch_size=1"]
    return load_config(TrainConfig, None, [*base, *overrides])


def rewrite_annotations(source: Path, target: Path, change) -> Path:
    """A copy of the Roboflow dataset ``source`` (train split) whose annotations went through ``change``."""
    split = target / "train"
    split.mkdir(parents=True)
    for image in (source / "train").iterdir():
        if image.suffix == ".jpg":
            shutil.copyfile(image, split / image.name)  # a symlink out of the folder is refused
    coco = json.loads((source / "train" / "_annotations.coco.json").read_text())
    sizes = {image["id"]: (image["width"], image["height"]) for image in coco["images"]}
    for annotation in coco["annotations"]:
        change(annotation, *sizes[annotation["image_id"]])
    (split / "_annotations.coco.json").write_text(json.dumps(coco))
    return target
