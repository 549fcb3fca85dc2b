"""The demo's two synthetic concept tasks, as :class:`~sam3tune.data.synth.SynthConfig` values.

Scenes: 64 px images, 1-3 upright filled shapes (20-40 px boxes, aspect 0.8-1.25) of 8 colours on
textured backgrounds.

* **Pretraining** (the shipped base model, ``scripts/pretrain_demo_base.py``): the 5 *seen* shapes in
  all colours. Categories are shape words ("circle": every circle) and colour + shape phrases ("red
  circle"), plus made-up words ("blorf", "red zamt") that name nothing, so that the model learns that
  a word it does not know means "nothing here".
* **Fine-tuning** (``sam3tune demo``): 3 *new* shapes whose words the base has never seen ("star",
  "heart", "moon"), any colour, with seen shapes as distractors (30% of the objects).
"""

from __future__ import annotations

import numpy as np

from sam3tune.data.synth import ANY, SynthConfig
from sam3tune.model.architectures import NAMED_ARCHITECTURES
from sam3tune.model.tokenizer import HashingTokenizer

ARCHITECTURE = "demo"
COLOURS = ("red", "green", "blue", "yellow", "orange", "purple", "cyan", "white")
SEEN_SHAPES = ("circle", "square", "triangle", "diamond", "hexagon")
NEW_SHAPES = ("star", "heart", "moon")  # not "cross": its token id is the one of "star"
DISTRACTOR_FRACTION = 0.3

_SCENE = {
    "image_size": (64, 64),
    "objects_per_image": (1, 3),
    "categories_per_image": (3, 3),  # kinds per image: every object a different (colour, shape)
    "object_size": (0.31, 0.62),
    "rotate": False,
    "aspect_ratio": (0.8, 1.25),
    "texture_strength": 0.4,
    "empty_fraction": 0.0,
}


def demo_tokenizer() -> HashingTokenizer:
    """The tokenizer of the ``demo`` architecture."""
    spec = NAMED_ARCHITECTURES[ARCHITECTURE]
    return HashingTokenizer(spec.text_vocab_size, spec.text_max_length)


def concept_words() -> tuple[str, ...]:
    """Every word the tasks use: colours, seen and new shape words."""
    return COLOURS + SEEN_SHAPES + NEW_SHAPES


def nonsense_words(count: int, seed: int = 0) -> tuple[str, ...]:
    """``count`` made-up prompts (4-7 letters; every second one after a colour, "red zamt"), each with
    a token id of its own that no concept word has (so the new shapes' words stay untrained)."""
    tokenizer = demo_tokenizer()
    taken = {tokenizer.word_id(w) for w in concept_words()}
    rng = np.random.default_rng(seed)
    words: list[str] = []
    while len(words) < count:
        word = "".join(chr(97 + int(c)) for c in rng.integers(0, 26, size=int(rng.integers(4, 8))))
        token = tokenizer.word_id(word)
        if token in taken:
            continue
        taken.add(token)
        colour = COLOURS[int(rng.integers(len(COLOURS)))]
        words.append(f"{colour} {word}" if len(words) % 2 else word)
    return tuple(words)


def pretraining_task(train_images: int, valid_images: int, nonsense: int, seed: int = 0) -> SynthConfig:
    """Seen shapes in every colour; categories: shape words, colour + shape phrases, ``nonsense``
    made-up prompts without objects (query them with ``data.keep_unused_categories``)."""
    kinds = tuple((colour, shape) for shape in SEEN_SHAPES for colour in COLOURS)
    return SynthConfig(
        categories=tuple((ANY, shape) for shape in SEEN_SHAPES) + kinds,
        objects=kinds,
        negative_categories=nonsense_words(nonsense, seed=seed),
        splits=(("train", train_images), ("valid", valid_images)),
        seed=seed,
        placeholder_category=False,
        project="demo-pretraining",
        **_SCENE,
    )


def finetune_task(
    train_images: int, heldout_images: int, seed: int = 1, shapes: tuple[str, ...] = NEW_SHAPES
) -> SynthConfig:
    """New shapes (by default "star", "heart", "moon"; any colour) with seen-shape distractors; splits
    ``train`` and ``test`` (held out)."""
    return SynthConfig(
        categories=tuple((ANY, shape) for shape in shapes),
        objects=tuple((colour, shape) for shape in shapes for colour in COLOURS),
        distractors=tuple((colour, shape) for shape in SEEN_SHAPES for colour in COLOURS),
        distractor_fraction=DISTRACTOR_FRACTION,
        splits=(("train", train_images), ("test", heldout_images)),
        seed=seed,
        placeholder_category=False,
        project="demo-new-shapes",
        **_SCENE,
    )
