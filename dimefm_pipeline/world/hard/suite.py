"""The hard world's tasks: how each labelled pool of pictures is drawn, and the test-time shifts.

Six zero-shot tasks over five pools (the shape x pattern and shade tasks label one pool):

| task | classes | what it asks |
| --- | ---: | --- |
| shape_pattern | 64 | fine-grained: 16 shapes (several differ by a detail) x 4 fill patterns, at smaller sizes |
| colour | 12 | shades in look-alike pairs, under varying lighting |
| count | 6 | one to six small objects that may hide each other, among clutter marks |
| relation | 24 | which of two shapes is left of (or above) the other, with at most one distractor |
| binding | 72 | which colour goes with which shape in a pair (the swapped pair is a class too) |
| novel_combo | 192 | colour-shape combinations that no training picture or sentence shows |

Every class name reads as a claim the checker verifies on its pictures (tests hold this).
Shifts: clip-art style (outlines on paper), unseen backgrounds, corruption (blur, noise, JPEG),
viewpoint (zoomed out, objects turned further than in training).
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, replace

import numpy as np

from dimefm_pipeline.world.hard.captions import with_article
from dimefm_pipeline.world.hard.render import STANDARD, HardStyle, render
from dimefm_pipeline.world.hard.scene import HardScene, draw_attributes, make_object, sample_clutter, scene_of
from dimefm_pipeline.world.hard.vocab import BASIC_COLOURS, BASIC_SHAPES, COLOURS, HELD_OUT, PATTERNS, SHAPES
from dimefm_pipeline.world.scene import UNSEEN_BACKGROUND_KINDS, sample_background, scene_rng

SUITE_SEED = 20261207  # fixed: the suite is part of the benchmark
POOLS = ("single", "crowd", "relation", "binding", "novel")
_SPLIT_STREAM = {"train": 201, "val": 202, "test": 203}  # + 10 * pool index; corpora use streams 0-9
_RETRIEVAL_STREAM = 261
_SHIFT_STREAM = 271

SHIFTS: dict[str, HardStyle | None] = {
    "clipart": HardStyle(outline=1.0, paper=True),
    "unseen_background": None,  # a scene change: stripes and checkerboards behind the objects
    "corruption": HardStyle(blur=0.8, noise=12.0, jpeg=30),
    "viewpoint": HardStyle(zoom=0.7, turn=50.0),
}
TEMPLATES = ("a picture of {c}.", "{c}.", "an image showing {c}.", "a drawing of {c}.")
COUNT_TEMPLATES = ("a picture of {c}.", "an image with {c}.", "{c}.", "there are {c}.")
COLOURS_ = tuple(COLOURS)
_PAIRS = tuple(itertools.permutations(BASIC_SHAPES, 2))
_BINDINGS = tuple((ca, sa, cb, sb) for ca, cb in itertools.combinations(BASIC_COLOURS, 2)
                  for sa in BASIC_SHAPES for sb in BASIC_SHAPES if sa != sb)
_NOVEL = tuple(sorted(HELD_OUT, key=lambda cs: (COLOURS_.index(cs[0]), SHAPES.index(cs[1]))))


@dataclass(frozen=True)
class TaskSpec:
    """One task: its pool, class names, prompt templates, and the label of a scene of its pool."""

    name: str
    pool: str
    classnames: tuple[str, ...]
    templates: tuple[str, ...]
    label: object  # (scene, extra) -> class index


def _count_name(n: int) -> str:
    return f"{('one', 'two', 'three', 'four', 'five', 'six')[n - 1]} object{'s' if n > 1 else ''}"


TASKS = (
    TaskSpec("shape_pattern", "single", tuple(with_article(f"{p} {s}") for s in SHAPES for p in PATTERNS), TEMPLATES,
             lambda sc, _: SHAPES.index(sc.objects[0].shape) * len(PATTERNS) + PATTERNS.index(sc.objects[0].pattern)),
    TaskSpec("colour", "single", tuple(with_article(f"{c} shape") for c in COLOURS_), TEMPLATES,
             lambda sc, _: COLOURS_.index(sc.objects[0].colour)),
    TaskSpec("count", "crowd", tuple(_count_name(n) for n in range(1, 7)), COUNT_TEMPLATES, lambda sc, _: sc.count - 1),
    TaskSpec("relation", "relation",
             tuple(f"a {a} to the left of a {b}" for a, b in _PAIRS) + tuple(f"a {a} above a {b}" for a, b in _PAIRS),
             TEMPLATES, lambda _, extra: extra),
    TaskSpec("binding", "binding", tuple(f"a {ca} {sa} and a {cb} {sb}" for ca, sa, cb, sb in _BINDINGS), TEMPLATES,
             lambda _, extra: extra),
    TaskSpec("novel_combo", "novel", tuple(with_article(f"{c} {s}") for c in COLOURS_ for s in SHAPES), TEMPLATES,
             lambda sc, _: COLOURS_.index(sc.objects[0].colour) * len(SHAPES) + SHAPES.index(sc.objects[0].shape)),
)


# The shape-and-pattern, colour and count pictures hold smaller objects than the world's own stream
# (radius 11-18 px alone, 5.5-9 in a crowd): a scale shift. At the stream's sizes the shipped teacher
# named 97.2% of shapes with patterns and 99.0% of counts, no room left to tell students apart.
SUITE_RADIUS = {"single": (7.0, 14.0), "crowd": (3.5, 6.5)}


def _single(rng: np.random.Generator) -> tuple[HardScene, None]:
    shape, pattern = SHAPES[int(rng.integers(len(SHAPES)))], PATTERNS[int(rng.integers(len(PATTERNS)))]
    colours = [c for c in COLOURS_ if (c, shape) not in HELD_OUT]
    return scene_of(rng, [(shape, colours[int(rng.integers(len(colours)))], pattern)], "single",
                    radius=SUITE_RADIUS["single"]), None


def _crowd(rng: np.random.Generator) -> tuple[HardScene, None]:
    n = int(rng.integers(1, 7))
    return scene_of(rng, [draw_attributes(rng) for _ in range(n)], "crowd", radius=SUITE_RADIUS["crowd"]), None


def _relation(rng: np.random.Generator) -> tuple[HardScene, int]:
    """Two basic shapes clearly apart along one axis, plus at most one distractor of another shape
    (with up to two the shipped teacher named 32.9% of the relations)."""
    pair = int(rng.integers(len(_PAIRS)))
    vertical = bool(rng.integers(2))
    first, second = _PAIRS[pair]
    r = rng.uniform(7.0, 10.0, size=2)
    gap = rng.uniform(16.0, 30.0)
    along = rng.uniform(r[0] + 1, 64 - r[1] - 1 - gap)  # first object's coordinate along the axis
    across = rng.uniform(12.0, 52.0, size=2)
    across[1] = np.clip(across[0] + rng.uniform(-0.3, 0.3) * gap, 11.0, 53.0)
    xy = [(along, across[0]), (along + gap, across[1])]
    if vertical:
        xy = [(y, x) for x, y in xy]
    objs = [make_object(rng, *draw_attributes(rng, shape=s), x, y, rad) for s, (x, y), rad in zip((first, second), xy, r)]
    others = [s for s in SHAPES if s not in BASIC_SHAPES]
    for _ in range(int(rng.integers(2))):
        rad = float(rng.uniform(5.0, 7.0))
        for _ in range(100):
            x, y = rng.uniform(rad + 1, 63 - rad, size=2)
            if all(np.hypot(x - o.cx, y - o.cy) >= 1.0 * (rad + o.radius) for o in objs):
                objs.append(make_object(rng, *draw_attributes(rng, shape=others[int(rng.integers(len(others)))]),
                                        x, y, rad))
                break
    order = rng.permutation(len(objs))  # drawing order carries no label
    bg = sample_background(rng)
    scene = HardScene(tuple(objs[int(i)] for i in order), bg, sample_clutter(rng, bg))
    return scene, pair + len(_PAIRS) * int(vertical)


def _binding(rng: np.random.Generator) -> tuple[HardScene, int]:
    k = int(rng.integers(len(_BINDINGS)))
    ca, sa, cb, sb = _BINDINGS[k]
    first = [draw_attributes(rng, shape=sa, colour=ca), draw_attributes(rng, shape=sb, colour=cb)]
    return scene_of(rng, first if rng.random() < 0.5 else first[::-1], "pair"), k


def _novel(rng: np.random.Generator) -> tuple[HardScene, None]:
    colour, shape = _NOVEL[int(rng.integers(len(_NOVEL)))]
    return scene_of(rng, [(shape, colour, draw_attributes(rng, shape=shape, colour=colour)[2])], "single"), None


_DRAW = {"single": _single, "crowd": _crowd, "relation": _relation, "binding": _binding, "novel": _novel}


def pool_scenes(pool: str, split: str, n: int) -> list[tuple[HardScene, object]]:
    """Scenes (with their label extra) of one pool and split; item i has its own random stream."""
    stream = _SPLIT_STREAM[split] + 10 * POOLS.index(pool)
    return [_DRAW[pool](scene_rng(SUITE_SEED, i, stream)) for i in range(n)]


def shifted_image(scene: HardScene, shift: str, i: int) -> np.ndarray:
    """Test picture `i` drawn under `shift`."""
    style = SHIFTS[shift]
    if style is None:
        rng = scene_rng(SUITE_SEED, i, _SHIFT_STREAM)
        return render(replace(scene, background=sample_background(rng, UNSEEN_BACKGROUND_KINDS)), STANDARD)
    return render(scene, style, seed=SUITE_SEED + i)


def retrieval_scenes(n: int) -> list[HardScene]:
    """Held-out pictures of the world's own distribution, for caption retrieval."""
    from dimefm_pipeline.world.hard.scene import sample_scene

    return [sample_scene(scene_rng(SUITE_SEED, i, _RETRIEVAL_STREAM)) for i in range(n)]


def retrieval_rng(i: int) -> np.random.Generator:
    """The stream the captions of retrieval picture `i` are drawn from."""
    return scene_rng(SUITE_SEED, i, _RETRIEVAL_STREAM + 1)




@dataclass(frozen=True)
class HardSuiteConfig:
    """Sizes of the hard suite. At 6,000 test pictures per task the 95% interval of the zero-shot
    mean of a model near 70% is under +-0.5 points (docs/world.md)."""

    n_train: int = 2000  # pictures per pool in the linear-probe training split
    n_val: int = 1000  # ... in the validation split (weight-decay selection)
    n_test: int = 6000  # ... in the test split
    n_shift: int = 1500  # the first test pictures of every pool, drawn under every shift
    n_retrieval: int = 1000  # held-out pictures for retrieval, two captions each
    shifts: tuple[str, ...] = tuple(SHIFTS)

    @staticmethod
    def quick() -> "HardSuiteConfig":
        return HardSuiteConfig(n_train=300, n_val=150, n_test=400, n_shift=200, n_retrieval=200)


def hard_suite(config: HardSuiteConfig = HardSuiteConfig(), *, tasks: tuple[str, ...] | None = None,
               retrieval: bool = True):
    """The hard world's evaluation suite at `config` sizes, optionally restricted to some `tasks`."""
    from dimefm_pipeline.evaluation.suite import ImageSet, LabelledSet, RetrievalSet, Suite, Task

    sizes = {"train": config.n_train, "val": config.n_val, "test": config.n_test}
    specs = [t for t in TASKS if tasks is None or t.name in tasks]
    scenes = {(t.pool, split): pool_scenes(t.pool, split, n) for t in specs for split, n in sizes.items()}

    def images(pool: str, split: str, shift: str | None = None) -> ImageSet:
        drawn = scenes[(pool, split)][: config.n_shift if shift else None]
        load = (lambda: [render(s) for s, _ in drawn]) if shift is None else \
            (lambda: [shifted_image(s, shift, i) for i, (s, _) in enumerate(drawn)])
        return ImageSet(f"world-hard/{pool}/{split}/{len(drawn)}" + (f"/{shift}" if shift else ""), load, len(drawn))

    def labelled(spec: TaskSpec, split: str, shift: str | None = None) -> LabelledSet:
        drawn = scenes[(spec.pool, split)][: config.n_shift if shift else None]
        return LabelledSet(images(spec.pool, split, shift), np.array([spec.label(s, e) for s, e in drawn], np.int64))

    built = tuple(Task(t.name, t.classnames, t.templates, labelled(t, "train"), labelled(t, "val"), labelled(t, "test"),
                       {shift: labelled(t, "test", shift) for shift in config.shifts}) for t in specs)
    found = None
    if retrieval:
        from dimefm_pipeline.world.hard.captions import HardCaptionStyle, caption

        pictures = retrieval_scenes(config.n_retrieval)
        captions, owner = [], []
        for i, scene in enumerate(pictures):
            rng = retrieval_rng(i)
            for _ in range(2):
                captions.append(caption(scene, rng, HardCaptionStyle.full()))
                owner.append(i)
        found = RetrievalSet(ImageSet(f"world-hard/retrieval/{len(pictures)}", lambda: [render(s) for s in pictures],
                                      len(pictures)), tuple(captions), np.array(owner, dtype=np.int64))
    return Suite("world-hard", built, found)
