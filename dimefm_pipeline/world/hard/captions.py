"""The hard world's caption grammar: true sentences with fill patterns, shades, relations and counts.

A caption describes a single object, a pair (joined by "and" or by a relation that holds in the
picture), or a crowd (its number, with one object, a relation between two, or the whole list when
short). Attributes are kept or dropped at random, so the corpus holds "a striped maroon hexagon to
the left of a dotted shape" next to "five objects". Nothing said is false; `checker.py` verifies it.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np

from dimefm_pipeline.world.hard.scene import HardObject, HardScene, relation
from dimefm_pipeline.world.hard.vocab import (
    COLOUR_WORDS,
    COUNT_NOUNS,
    COUNT_WORDS,
    GENERIC_NOUNS,
    PATTERN_WORDS,
    RELATION_WORDS,
    SHAPE_WORDS,
)

SINGLE = ("{a}.", "a picture of {a}.", "an image showing {a}.", "there is {a}.", "a drawing of {a}.",
          "a photo of {a}.", "a close-up of {a}.")
RELATED = ("{a} {r} {b}.", "a picture of {a} {r} {b}.", "{a} is {r} {b}.", "an image showing {a} {r} {b}.",
           "there is {a} {r} {b}.")
PAIR = ("{a} and {b}.", "a picture of {a} and {b}.", "{c}: {a} and {b}.", "an image with {c}: {a} and {b}.")
COUNT_ONLY = ("a picture of {c}.", "there {be} {c}.", "an image with {c}.", "{c}.")
AMONG = ("{c}, among them {a}.", "a picture of {c}, including {a}.", "{c} with {a} among them.")
CROWD_RELATED = ("{c}, with {a} {r} {b}.", "a picture of {c}; {a} is {r} {b}.")
LISTED = ("{c}: {L}.", "a picture of {L}.", "there are {c}: {L}.")


@dataclass(frozen=True)
class HardCaptionStyle:
    """How much a caption says; `full()` keeps every attribute of every named object."""

    p_colour: float = 0.8  # chance an object phrase names the colour
    p_pattern: float = 0.7  # ... the fill pattern (a plain fill is named a third as often)
    p_shape: float = 0.85  # ... the shape (else "shape", "object", "item")
    p_relation: float = 0.6  # chance a pair (or a crowd caption) states a relation that holds
    p_count_only: float = 0.1  # chance a caption only says how many objects there are

    @staticmethod
    def full() -> "HardCaptionStyle":
        return HardCaptionStyle(1.0, 1.0, 1.0, 0.6, 0.0)


def _pick(rng: np.random.Generator, options):
    return options[int(rng.integers(len(options)))]


def with_article(phrase: str) -> str:
    """'an olive star', 'a star'."""
    return ("an " if phrase[0] in "aeiou" else "a ") + phrase


def object_phrase(obj: HardObject, rng: np.random.Generator, style: HardCaptionStyle = HardCaptionStyle()) -> str:
    """'a striped maroon hexagon', with each attribute kept per `style`."""
    words = []
    p_pattern = style.p_pattern if obj.pattern != "solid" else style.p_pattern / 3
    if rng.random() < p_pattern:
        words.append(_pick(rng, PATTERN_WORDS[obj.pattern]))
    if rng.random() < style.p_colour:
        words.append(_pick(rng, COLOUR_WORDS[obj.colour]))
    words.append(_pick(rng, SHAPE_WORDS[obj.shape]) if rng.random() < style.p_shape else _pick(rng, GENERIC_NOUNS))
    return with_article(" ".join(words))


def count_phrase(n: int, rng: np.random.Generator) -> str:
    """'five objects', 'a pair of shapes', 'one item'."""
    noun = _pick(rng, COUNT_NOUNS)
    return f"{_pick(rng, COUNT_WORDS[n])} {noun[:-1] if n == 1 else noun}"


def related_pair(scene: HardScene, rng: np.random.Generator) -> tuple[int, int, str] | None:
    """A random ordered pair of objects (i, j) with the relation of i to j, if any pair has one."""
    pairs = [(i, j) for i, j in itertools.permutations(range(scene.count), 2)]
    for k in rng.permutation(len(pairs)):
        i, j = pairs[int(k)]
        rel = relation(scene.objects[i], scene.objects[j])
        if rel is not None:
            return i, j, rel
    return None


def caption(scene: HardScene, rng: np.random.Generator, style: HardCaptionStyle = HardCaptionStyle()) -> str:
    """One true sentence about `scene`."""
    n = scene.count
    c = count_phrase(n, rng)
    if rng.random() < style.p_count_only:
        return _pick(rng, COUNT_ONLY).format(c=c, be="is" if n == 1 else "are")
    phrase = lambda i: object_phrase(scene.objects[i], rng, style)  # noqa: E731
    if n == 1:
        return _pick(rng, SINGLE).format(a=phrase(0))
    pair = related_pair(scene, rng) if rng.random() < style.p_relation else None
    if pair is not None:
        i, j, rel = pair
        templates = RELATED if n == 2 else CROWD_RELATED
        return _pick(rng, templates).format(a=phrase(i), r=_pick(rng, RELATION_WORDS[rel]), b=phrase(j), c=c)
    order = [int(i) for i in rng.permutation(n)]
    if n == 2:
        return _pick(rng, PAIR).format(a=phrase(order[0]), b=phrase(order[1]), c=c)
    if n == 3 and rng.random() < 0.5:
        listed = ", ".join(phrase(i) for i in order[:-1]) + " and " + phrase(order[-1])
        return _pick(rng, LISTED).format(L=listed, c=c)
    if rng.random() < 0.4:
        return _pick(rng, COUNT_ONLY).format(c=c, be="are")
    return _pick(rng, AMONG).format(c=c, a=phrase(order[0]))
