"""The demo's concept tasks: words with their own token ids, seen and new concepts kept apart."""

from __future__ import annotations

from sam3tune.data.synth import ANY
from sam3tune.demo.tasks import (
    COLOURS,
    NEW_SHAPES,
    SEEN_SHAPES,
    concept_words,
    demo_tokenizer,
    finetune_task,
    nonsense_words,
    pretraining_task,
)


def test_every_word_has_its_own_token():
    tokenizer = demo_tokenizer()
    concept_ids = [tokenizer.word_id(w) for w in concept_words()]
    assert len(set(concept_ids)) == len(concept_ids) == 16  # e.g. "cross" would share "star"'s id
    words = nonsense_words(40)
    assert words == nonsense_words(40) and len(set(words)) == 40
    made_up = [w.split()[-1] for w in words]
    made_up_ids = {tokenizer.word_id(w) for w in made_up}
    assert len(made_up_ids) == 40 and not made_up_ids & set(concept_ids)
    assert all(w.split()[0] in COLOURS for w in words[1::2]) and all(" " not in w for w in words[::2])


def test_pretraining_never_shows_the_new_shapes():
    task = pretraining_task(10, 5, nonsense=6)
    names = task.category_names()
    assert names[:5] == list(SEEN_SHAPES) and "red circle" in names and len(names) == 5 + 5 * 8 + 6
    assert {shape for _, shape in task.object_kinds()} == set(SEEN_SHAPES)
    assert not any(word in name.split() for name in names for word in NEW_SHAPES)
    assert task.distractor_fraction == 0 and not task.rotate and task.image_size == (64, 64)


def test_finetune_task_asks_for_new_shapes_among_seen_distractors():
    task = finetune_task(10, 5)
    assert task.category_pairs() == tuple((ANY, shape) for shape in NEW_SHAPES)
    assert task.category_names() == list(NEW_SHAPES)
    assert {shape for _, shape in task.object_kinds()} == set(NEW_SHAPES)
    assert {shape for _, shape in task.distractors} == set(SEEN_SHAPES) and task.distractor_fraction == 0.3
    assert [name for name, _ in task.splits] == ["train", "test"]


def test_retention_task_labels_the_same_held_out_images_for_the_seen_shapes(tmp_path):
    import json

    import numpy as np
    from PIL import Image

    from sam3tune.data.synth import generate
    from sam3tune.demo.tasks import retention_task

    generate(finetune_task(4, 6), tmp_path / "new", progress=False)
    generate(retention_task(6), tmp_path / "seen", progress=False)
    for index in range(6):
        name = f"{index:06d}.jpg"
        a, b = (np.asarray(Image.open(tmp_path / d / "test" / name)) for d in ("new", "seen"))
        assert (a == b).all()
    new, seen = (
        json.loads((tmp_path / d / "test" / "_annotations.coco.json").read_text()) for d in ("new", "seen")
    )
    assert [c["name"] for c in seen["categories"]] == list(SEEN_SHAPES)
    # every drawn object is labelled once: new shapes in one file, the seen distractors in the other
    boxes = lambda coco: sorted((a["image_id"], *a["bbox"]) for a in coco["annotations"])  # noqa: E731
    assert not set(boxes(new)) & set(boxes(seen)) and len(seen["annotations"]) > 0
