"""The world's closed vocabulary: attributes, their rendering parameters and their words.

Every attribute value has one canonical name (used as a class name by the evaluation tasks) and a
few synonyms (used by the caption grammar). The caption checker parses captions with these same
word lists, so adding a synonym here teaches both the grammar and the checker at once.
"""

from __future__ import annotations

# Canonical shape names, in class-index order.
SHAPES = ("circle", "square", "triangle", "diamond", "star", "cross", "ring", "semicircle")

# Saturated object colours, chosen far from the muted background palette so colour stays readable.
COLOURS = {
    "red": (220, 40, 40),
    "green": (40, 170, 60),
    "blue": (40, 80, 230),
    "yellow": (245, 215, 40),
    "purple": (140, 60, 190),
    "orange": (245, 140, 30),
    "pink": (245, 130, 200),
    "cyan": (40, 200, 210),
}

SIZES = ("small", "large")
# Radius ranges in pixels on a 64 px canvas; the gap between them keeps the size task well posed.
SIZE_RADIUS = {"small": (5.5, 7.0), "large": (9.5, 11.5)}

POSITIONS = ("top left", "top right", "bottom left", "bottom right", "center")
# Anchor (x, y) as a fraction of the canvas side.
POSITION_ANCHOR = {
    "top left": (0.22, 0.22),
    "top right": (0.78, 0.22),
    "bottom left": (0.22, 0.78),
    "bottom right": (0.78, 0.78),
    "center": (0.5, 0.5),
}

COUNTS = (1, 2, 3)
COUNT_NAMES = {1: "one", 2: "two", 3: "three"}

SHAPE_WORDS = {
    "circle": ("circle", "disc", "round dot"),
    "square": ("square", "box"),
    "triangle": ("triangle",),
    "diamond": ("diamond", "rhombus"),
    "star": ("star",),
    "cross": ("cross", "plus sign"),
    "ring": ("ring", "hoop"),
    "semicircle": ("semicircle", "half disc"),
}
COLOUR_WORDS = {c: (c,) for c in COLOURS} | {"purple": ("purple", "violet"), "cyan": ("cyan", "turquoise")}
SIZE_WORDS = {"small": ("small", "little", "tiny"), "large": ("large", "big")}
POSITION_WORDS = {
    "top left": ("top left", "upper left", "top-left corner"),
    "top right": ("top right", "upper right", "top-right corner"),
    "bottom left": ("bottom left", "lower left", "bottom-left corner"),
    "bottom right": ("bottom right", "lower right", "bottom-right corner"),
    "center": ("center", "middle"),
}
COUNT_WORDS = {1: ("one", "a single"), 2: ("two", "a pair of"), 3: ("three",)}
# Nouns that stand for an object whose shape is left unsaid.
GENERIC_NOUNS = ("shape", "object")


def all_visual_words() -> set[str]:
    """Every single word that carries visual meaning in the world (for keeping distractors clean)."""
    words: set[str] = set(GENERIC_NOUNS) | {"shapes", "objects"}
    for table in (SHAPE_WORDS, COLOUR_WORDS, SIZE_WORDS, POSITION_WORDS):
        for synonyms in table.values():
            for phrase in synonyms:
                words.update(phrase.replace("-", " ").split())
    words -= {"corner", "sign", "dot"}  # only visual inside their phrases
    return words
