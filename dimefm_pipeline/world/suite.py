"""The world's evaluation suite: six classification tasks, four distribution shifts, caption retrieval.

Splits are seeded random streams of their own (one per pool and split), disjoint from the streams
that training corpora use, so the suite is the same on every machine and never seen in training.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from dimefm_pipeline.core.errors import DimefmError
from dimefm_pipeline.evaluation.clip_benchmark import clip_benchmark_suite, is_clip_benchmark_folder
from dimefm_pipeline.evaluation.folder_suite import folder_suite
from dimefm_pipeline.evaluation.suite import ImageSet, LabelledSet, RetrievalSet, Suite, Task
from dimefm_pipeline.world.captions import CaptionStyle, caption
from dimefm_pipeline.world.render import STANDARD, RenderStyle, render
from dimefm_pipeline.world.scene import UNSEEN_BACKGROUND_KINDS, Scene, sample_background, sample_scene, scene_rng
from dimefm_pipeline.world.vocab import COLOURS, COUNT_NAMES, COUNTS, POSITIONS, SHAPES, SIZES

SUITE_SEED = 20240601  # fixed: the suite is part of the benchmark, not a knob
# Random streams of the suite's pools; training corpora use streams 0-9.
_STREAMS = {("single", "train"): 101, ("single", "val"): 102, ("single", "test"): 103,
            ("multi", "train"): 111, ("multi", "val"): 112, ("multi", "test"): 113, ("retrieval", "test"): 121}
_SHIFT_STREAM = 131

# Distribution shifts of the test images: the same scenes, drawn differently.
SHIFTS: dict[str, RenderStyle | None] = {
    "sketch": RenderStyle(outline_only=True),
    "noise_blur": RenderStyle(blur=1.0, noise=24.0),
    "unseen_background": None,  # a scene change, not a style: stripes and checkerboards
    "tilt": RenderStyle(tilt=20.0),
}

SHAPE_TEMPLATES = ("a picture of a {c}.", "a {c}.", "an image showing a {c}.", "a drawing of a {c}.")
ATTRIBUTE_TEMPLATES = ("a picture of a {c} shape.", "a {c} object.", "an image showing a {c} shape.",
                       "a drawing of a {c} shape.")
POSITION_TEMPLATES = ("a picture of a shape in the {c}.", "an object at the {c}.", "there is a shape in the {c}.",
                      "a drawing of an object in the {c}.")
COUNT_TEMPLATES = ("a picture of {c}.", "an image with {c}.", "{c}.", "a drawing of {c}.")


@dataclass(frozen=True)
class WorldSuiteConfig:
    """Sizes of the world suite; `quick()` is a smaller version for tests and training-time checks."""

    n_train: int = 1000  # images per pool in the linear-probe training split
    n_val: int = 500  # ... in the validation split (weight-decay selection)
    n_test: int = 1000  # ... in the test split (and in each shifted copy of it)
    n_retrieval: int = 500  # held-out images for retrieval
    captions_per_image: int = 2  # true captions per retrieval image
    shifts: tuple[str, ...] = tuple(SHIFTS)
    image_size: int = 64

    @staticmethod
    def quick() -> "WorldSuiteConfig":
        return WorldSuiteConfig(n_train=300, n_val=150, n_test=300, n_retrieval=200)


def _scenes(pool: str, split: str, n: int, size: int) -> list[Scene]:
    stream = _STREAMS[(pool, split)]
    if pool == "multi":  # balanced counts for the count task
        return [sample_scene(scene_rng(SUITE_SEED, i, stream), size=size, count_weights=(1, 1, 1)) for i in range(n)]
    n_objects = 1 if pool == "single" else None
    return [sample_scene(scene_rng(SUITE_SEED, i, stream), n_objects=n_objects, size=size) for i in range(n)]


def _shifted(scene: Scene, shift: str, i: int) -> np.ndarray:
    style = SHIFTS[shift]
    if style is None:
        bg = sample_background(scene_rng(SUITE_SEED, i, _SHIFT_STREAM), UNSEEN_BACKGROUND_KINDS)
        return render(replace(scene, background=bg), STANDARD)
    return render(scene, style, seed=SUITE_SEED + i)


def _image_set(key: str, scenes: list[Scene], shift: str | None = None) -> ImageSet:
    def load() -> list[np.ndarray]:
        if shift is None:
            return [render(s) for s in scenes]
        return [_shifted(s, shift, i) for i, s in enumerate(scenes)]

    return ImageSet(key, load, len(scenes))


def _task_specs() -> list[tuple[str, str, tuple[str, ...], tuple[str, ...], object]]:
    colours = tuple(COLOURS)
    pairs = tuple(f"{c} {s}" for c in colours for s in SHAPES)
    return [
        ("shape", "single", SHAPES, SHAPE_TEMPLATES, lambda sc: SHAPES.index(sc.objects[0].shape)),
        ("colour", "single", colours, ATTRIBUTE_TEMPLATES, lambda sc: colours.index(sc.objects[0].colour)),
        ("size", "single", SIZES, ATTRIBUTE_TEMPLATES, lambda sc: SIZES.index(sc.objects[0].size)),
        ("position", "single", POSITIONS, POSITION_TEMPLATES, lambda sc: POSITIONS.index(sc.objects[0].position)),
        ("count", "multi", tuple(f"{COUNT_NAMES[n]} object{'s' if n > 1 else ''}" for n in COUNTS),
         COUNT_TEMPLATES, lambda sc: sc.count - 1),
        ("colour_shape", "single", pairs, SHAPE_TEMPLATES,
         lambda sc: pairs.index(f"{sc.objects[0].colour} {sc.objects[0].shape}")),
    ]


def world_suite(config: WorldSuiteConfig = WorldSuiteConfig(), *, tasks: tuple[str, ...] | None = None,
                retrieval: bool = True) -> Suite:
    """The world suite at `config` sizes, optionally restricted to some `tasks`."""
    size = config.image_size
    counts = {"train": config.n_train, "val": config.n_val, "test": config.n_test}
    scenes = {(pool, split): _scenes(pool, split, n, size) for pool in ("single", "multi") for split, n in counts.items()}

    def sets(pool: str, split: str) -> ImageSet:
        return _image_set(f"world/{pool}/{split}/{counts[split]}/{size}", scenes[(pool, split)])

    built = []
    for name, pool, classnames, templates, label_of in _task_specs():
        if tasks is not None and name not in tasks:
            continue

        def labelled(images: ImageSet, split: str, _pool=pool, _label=label_of) -> LabelledSet:
            return LabelledSet(images, np.array([_label(s) for s in scenes[(_pool, split)]], dtype=np.int64))

        shifted = {
            shift: labelled(_image_set(f"world/{pool}/test/{config.n_test}/{size}/{shift}", scenes[(pool, "test")], shift),
                            "test")
            for shift in config.shifts
        }
        built.append(Task(name, tuple(classnames), templates, labelled(sets(pool, "train"), "train"),
                          labelled(sets(pool, "val"), "val"), labelled(sets(pool, "test"), "test"), shifted))
    return Suite("world", tuple(built), _retrieval_set(config) if retrieval else None)


def _retrieval_set(config: WorldSuiteConfig) -> RetrievalSet:
    scenes = _scenes("retrieval", "test", config.n_retrieval, config.image_size)
    captions, owner = [], []
    for i, sc in enumerate(scenes):
        rng = scene_rng(SUITE_SEED, i, _STREAMS[("retrieval", "test")] + 1)
        for _ in range(config.captions_per_image):
            captions.append(caption(sc, rng, CaptionStyle.full()))
            owner.append(i)
    images = _image_set(f"world/retrieval/{config.n_retrieval}/{config.image_size}", scenes)
    return RetrievalSet(images, tuple(captions), np.array(owner, dtype=np.int64))


SUITES = ("world", "world-hard")  # the built-in suites by name


def resolve_suite(suite, world_config=None, *, quick: bool = False) -> Suite:
    """A Suite from `world` or `world-hard` (at `world_config` sizes, a `WorldSuiteConfig` or a
    `HardSuiteConfig`, else the full or `quick` sizes), a folder of CLIP_benchmark WebDataset
    datasets, a folder-per-class dataset (`evaluation.folder_suite`), or a Suite."""
    if isinstance(suite, Suite):
        return suite
    if str(suite) == "world":
        return world_suite(world_config or (WorldSuiteConfig.quick() if quick else WorldSuiteConfig()))
    if str(suite) == "world-hard":
        from dimefm_pipeline.world.hard.suite import HardSuiteConfig, hard_suite

        return hard_suite(world_config or (HardSuiteConfig.quick() if quick else HardSuiteConfig()))
    path = Path(suite)
    if not path.is_dir():
        what = "is a file" if path.exists() else "does not exist"
        raise DimefmError(f"--suite {suite} {what}: give `world-hard`, `world`, a folder of CLIP_benchmark datasets "
                          "(wds/NAME/...), or a folder with a subfolder of images per class and classnames.txt "
                          "(docs/evaluation.md)")
    if is_clip_benchmark_folder(path):
        return clip_benchmark_suite(path)
    return folder_suite(path)
