"""The hard world's closed vocabulary: fine-grained shapes, colour shades, fill patterns, counts and
relations, with their words, their long-tailed frequencies and the held-out colour-shape combinations.

The caption grammar and the checker both read these tables, so a synonym added here is written by
one and understood by the other.
"""

from __future__ import annotations

# Sixteen shapes; several differ only by a detail at 64 px (pentagon / hexagon / octagon / circle,
# star / hexagram, square / trapezoid / diamond, semicircle / crescent).
SHAPES = ("triangle", "square", "pentagon", "hexagon", "octagon", "circle", "ring", "star", "hexagram", "cross",
          "diamond", "semicircle", "heart", "crescent", "arrow", "trapezoid")
SHAPE_WORDS = {
    "triangle": ("triangle",),
    "square": ("square",),
    "pentagon": ("pentagon",),
    "hexagon": ("hexagon",),
    "octagon": ("octagon",),
    "circle": ("circle", "disc"),
    "ring": ("ring", "hoop"),
    "star": ("star", "five-pointed star"),
    "hexagram": ("hexagram", "six-pointed star"),
    "cross": ("cross", "plus sign"),
    "diamond": ("diamond", "rhombus"),
    "semicircle": ("semicircle", "half disc"),
    "heart": ("heart",),
    "crescent": ("crescent", "crescent moon"),
    "arrow": ("arrow",),
    "trapezoid": ("trapezoid",),
}

# Twelve shades in pairs that lighting pushes into each other (red / maroon, orange / brown,
# yellow / olive, green / teal, blue / navy, purple / pink): a nearest-neighbour classifier on the
# pixel colour alone, lighting included, tells them apart 94% of the time (docs/world.md).
COLOURS = {
    "red": (212, 38, 38),
    "maroon": (150, 26, 42),
    "orange": (240, 132, 28),
    "brown": (168, 98, 40),
    "yellow": (238, 208, 44),
    "olive": (160, 150, 38),
    "green": (44, 160, 64),
    "teal": (30, 140, 112),
    "blue": (44, 92, 226),
    "navy": (34, 50, 150),
    "purple": (132, 58, 178),
    "pink": (200, 100, 190),
}
COLOUR_WORDS = {c: (c,) for c in COLOURS} | {"purple": ("purple", "violet"), "navy": ("navy", "navy blue")}
BRIGHTNESS = (0.65, 1.35)  # lighting: an object's colour is scaled by a factor drawn from this range
COLOUR_JITTER = 14.0  # +- per channel, after the lighting factor

PATTERNS = ("solid", "striped", "dotted", "checked")
PATTERN_WORDS = {"solid": ("solid", "plain"), "striped": ("striped",), "dotted": ("dotted", "spotted"),
                 "checked": ("checked", "checkered")}
PATTERN_FREQ = (0.55, 0.15, 0.15, 0.15)  # solid fills are the common case

COUNTS = (1, 2, 3, 4, 5, 6)
COUNT_WORDS = {1: ("one", "a single"), 2: ("two", "a pair of"), 3: ("three",), 4: ("four",), 5: ("five",),
               6: ("six",)}
COUNT_NOUNS = ("objects", "shapes", "items")
GENERIC_NOUNS = ("shape", "object", "item")

# Relations between two objects, as seen in the picture (y grows downwards).
RELATIONS = ("left", "right", "above", "below")
RELATION_WORDS = {"left": ("to the left of", "left of"), "right": ("to the right of", "right of"),
                  "above": ("above",), "below": ("below", "beneath")}
RELATION_GAP = 8.0  # px between centres along the main axis before a relation is stated
RELATION_SLOPE = 0.5  # the other axis may differ by at most this share of the main one

# Long tails: the rank-k item of these orders is drawn with odds 1 / (k + 1) ** exponent. The shape
# tail spans 12x (heads: circle, square; tail: trapezoid, hexagram), the colour tail 3.5x.
SHAPE_ORDER = ("circle", "square", "triangle", "star", "cross", "diamond", "ring", "heart", "hexagon", "arrow",
               "semicircle", "pentagon", "crescent", "octagon", "trapezoid", "hexagram")
SHAPE_TAIL = 0.9
COLOUR_ORDER = ("red", "blue", "green", "yellow", "orange", "purple", "pink", "brown", "teal", "navy", "olive",
                "maroon")
COLOUR_TAIL = 0.5

# Colour-shape combinations that no training image and no training sentence shows: two colours per
# shape, each colour withheld from two or three shapes, never one of the four basic colours on one of
# the four basic shapes (the binding and relation tasks use those).
HELD_OUT = frozenset({
    ("purple", "triangle"), ("olive", "triangle"), ("teal", "square"), ("brown", "square"),
    ("blue", "pentagon"), ("yellow", "pentagon"), ("navy", "hexagon"), ("pink", "hexagon"),
    ("green", "octagon"), ("red", "octagon"), ("maroon", "circle"), ("orange", "circle"),
    ("teal", "ring"), ("brown", "ring"), ("pink", "star"), ("purple", "star"),
    ("red", "hexagram"), ("navy", "hexagram"), ("yellow", "cross"), ("green", "cross"),
    ("blue", "diamond"), ("maroon", "diamond"), ("orange", "semicircle"), ("olive", "semicircle"),
    ("red", "heart"), ("olive", "heart"), ("green", "crescent"), ("purple", "crescent"),
    ("teal", "arrow"), ("pink", "arrow"), ("navy", "trapezoid"), ("yellow", "trapezoid"),
})
BASIC_SHAPES = ("circle", "square", "triangle", "star")
BASIC_COLOURS = ("red", "blue", "green", "yellow")


def tail_weights(order: tuple[str, ...], exponent: float, values: tuple[str, ...]) -> list[float]:
    """Odds of each of `values` (in that order) under the long tail of `order`."""
    rank = {v: k for k, v in enumerate(order)}
    return [1.0 / (rank[v] + 1) ** exponent for v in values]


def all_visual_words() -> set[str]:
    """Every single word that carries visual meaning in the hard world."""
    words = set(GENERIC_NOUNS) | set(COUNT_NOUNS)
    for table in (SHAPE_WORDS, COLOUR_WORDS, PATTERN_WORDS, RELATION_WORDS):
        for synonyms in table.values():
            for phrase in synonyms:
                words.update(phrase.replace("-", " ").split())
    for synonyms in COUNT_WORDS.values():
        words.update(s.split()[-1] for s in synonyms if s not in ("a single", "a pair of"))
    words -= {"to", "the", "of", "sign", "pointed", "moon", "half"}  # visual only inside their phrases
    return words
