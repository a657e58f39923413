"""What an evaluation suite is: classification tasks with splits, shifted test sets and a retrieval set.

Images are loaded lazily, and every image set carries a key: sets with the same key hold the same
images, so the runner extracts their features once however many tasks share them (the world's
shape, colour, size and position tasks all label one pool of single-object images).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import numpy as np


@dataclass(frozen=True)
class ImageSet:
    """A list of images (PIL images or HxWx3 uint8 arrays) produced on demand."""

    key: str  # equal keys mean equal images
    load: Callable[[], list] = field(compare=False, repr=False)
    n: int = 0


@dataclass(frozen=True)
class LabelledSet:
    """Images with one integer class label each."""

    images: ImageSet
    labels: np.ndarray = field(compare=False, repr=False)


@dataclass(frozen=True)
class Task:
    """One classification task: class names and prompt templates for zero-shot, splits for the probe."""

    name: str
    classnames: tuple[str, ...]
    templates: tuple[str, ...]  # each holds "{c}", replaced by a class name
    train: LabelledSet
    val: LabelledSet
    test: LabelledSet
    shifts: dict[str, LabelledSet] = field(default_factory=dict)  # shift name -> shifted test set

    def prompts(self, classname: str) -> list[str]:
        """The prompt ensemble of one class."""
        return [t.format(c=classname) for t in self.templates]


@dataclass(frozen=True)
class RetrievalSet:
    """Held-out images with their true captions; caption i describes image `caption_image[i]`."""

    images: ImageSet
    captions: tuple[str, ...]
    caption_image: np.ndarray = field(compare=False, repr=False)


@dataclass(frozen=True)
class Suite:
    """Everything `evaluate` measures."""

    name: str
    tasks: tuple[Task, ...]
    retrieval: RetrievalSet | None = None
