"""The caption grammar: true sentences about a scene, with varied templates, synonyms and detail.

Every caption mentions all objects of its scene or states only their number; each object phrase
keeps or drops each attribute at random, so the corpus holds both full descriptions ("a small red
star in the top left") and partial ones ("a red shape"). Nothing a caption says is false; the
checker in `checker.py` verifies that independently.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from dimefm_pipeline.world.scene import Scene, WorldObject
from dimefm_pipeline.world.vocab import (
    COLOUR_WORDS,
    COUNT_WORDS,
    GENERIC_NOUNS,
    POSITION_WORDS,
    SHAPE_WORDS,
    SIZE_WORDS,
)

SINGLE_TEMPLATES = (
    "{o}.",
    "a picture of {o}.",
    "an image showing {o}.",
    "there is {o}.",
    "a drawing of {o}.",
    "a photo of {o}.",
    "{c}: {o}.",
)
MULTI_TEMPLATES = (
    "{L}.",
    "a picture of {L}.",
    "{c}: {L}.",
    "an image with {c}: {L}.",
    "there are {c}: {L}.",
    "a drawing of {L}.",
)
ONE_ATTRIBUTE = ("shape", "colour", "size", "position")
COUNT_ONLY_TEMPLATES = ("a picture of {c}.", "there {be} {c}.", "an image with {c}.", "{c}.")


@dataclass(frozen=True)
class CaptionStyle:
    """How much detail object phrases keep; `full()` keeps every attribute (retrieval captions)."""

    p_colour: float = 0.8  # chance an object phrase names the colour
    p_size: float = 0.5  # ... the size
    p_position: float = 0.5  # ... the position
    p_shape: float = 0.85  # ... the shape (else a generic noun: "shape", "object")
    p_count_only: float = 0.1  # chance a caption only states how many objects there are
    p_one_attribute: float = 0.0  # chance a caption names one kind of attribute only ("a circle and a star")

    @staticmethod
    def full() -> "CaptionStyle":
        return CaptionStyle(1.0, 1.0, 1.0, 1.0, 0.0)


def _pick(rng: np.random.Generator, options: tuple[str, ...]) -> str:
    return options[int(rng.integers(len(options)))]


def _article(phrase: str) -> str:
    return ("an " if phrase[0] in "aeiou" else "a ") + phrase


def object_phrase(obj: WorldObject, rng: np.random.Generator, style: CaptionStyle = CaptionStyle()) -> str:
    """'a small red star in the top left', with each attribute kept per `style`."""
    words = []
    if rng.random() < style.p_size:
        words.append(_pick(rng, SIZE_WORDS[obj.size]))
    if rng.random() < style.p_colour:
        words.append(_pick(rng, COLOUR_WORDS[obj.colour]))
    words.append(_pick(rng, SHAPE_WORDS[obj.shape]) if rng.random() < style.p_shape else _pick(rng, GENERIC_NOUNS))
    phrase = _article(" ".join(words))
    if rng.random() < style.p_position:
        phrase += f" {_pick(rng, ('in', 'at'))} the {_pick(rng, POSITION_WORDS[obj.position])}"
    return phrase


def count_phrase(n: int, rng: np.random.Generator) -> str:
    """'two objects', 'a pair of shapes', 'one shape'."""
    noun = _pick(rng, ("object", "shape") if n == 1 else ("objects", "shapes"))
    return f"{_pick(rng, COUNT_WORDS[n])} {noun}"


def caption(scene: Scene, rng: np.random.Generator, style: CaptionStyle = CaptionStyle()) -> str:
    """One true sentence about `scene`."""
    c = count_phrase(scene.count, rng)
    if rng.random() < style.p_count_only:
        return _pick(rng, COUNT_ONLY_TEMPLATES).format(c=c, be="is" if scene.count == 1 else "are")
    if style.p_one_attribute and rng.random() < style.p_one_attribute:
        kind = ONE_ATTRIBUTE[int(rng.integers(len(ONE_ATTRIBUTE)))]
        style = CaptionStyle(p_colour=float(kind == "colour"), p_size=float(kind == "size"),
                             p_position=float(kind == "position"), p_shape=float(kind == "shape"), p_count_only=0.0)
    order = rng.permutation(scene.count)
    phrases = [object_phrase(scene.objects[i], rng, style) for i in order]
    if scene.count == 1:
        return _pick(rng, SINGLE_TEMPLATES).format(o=phrases[0], c=c)
    listed = ", ".join(phrases[:-1]) + " and " + phrases[-1]
    return _pick(rng, MULTI_TEMPLATES).format(L=listed, c=c)
