"""Hard-world corpus items: picture `i` and sentence `i` of a seed, from independent streams.

The writers of `dimefm_pipeline/world/corpus.py` put them on disk in the formats real data comes in.
"""

from __future__ import annotations

import numpy as np

from dimefm_pipeline.world.distractors import distractor_sentence
from dimefm_pipeline.world.hard.captions import HardCaptionStyle, caption
from dimefm_pipeline.world.hard.render import render
from dimefm_pipeline.world.hard.scene import sample_scene
from dimefm_pipeline.world.hard.vocab import all_visual_words
from dimefm_pipeline.world.scene import scene_rng

IMAGE_STREAM = 2  # the same stream numbers as the easy world's corpora
TEXT_STREAM = 3
_VISUAL = all_visual_words()
# Captions redrawn with less detail when one is longer than the context: relations go first, then patterns.
SHORTER = (HardCaptionStyle(p_relation=0.0), HardCaptionStyle(p_relation=0.0, p_pattern=0.0),
           HardCaptionStyle(0.0, 0.0, 1.0, 0.0, 0.0))


def hard_image(seed: int, index: int) -> np.ndarray:
    """Picture `index` of the hard-world corpus with `seed`."""
    return render(sample_scene(scene_rng(seed, index, IMAGE_STREAM)))


def hard_distractor(rng: np.random.Generator) -> str:
    """A non-visual sentence with no word of the hard world's visual vocabulary ("one", "over", ...)."""
    while True:
        text = distractor_sentence(rng)
        if not set(text.replace(".", " ").replace(",", " ").split()) & _VISUAL:
            return text


def hard_sentence(seed: int, index: int, distractor_share: float = 0.3, fits=None) -> str:
    """Sentence `index` of the hard-world corpus: a caption of an unseen scene, or a distractor.
    `fits(text) -> bool` (the teacher's context length) makes a caption that does not fit be redrawn
    with less detail."""
    rng = scene_rng(seed, index, TEXT_STREAM)
    if rng.random() < distractor_share:
        text = hard_distractor(rng)
        while fits is not None and not fits(text):
            text = hard_distractor(rng)
        return text
    scene = sample_scene(rng)
    text = caption(scene, rng)
    for style in SHORTER:
        if fits is None or fits(text):
            break
        text = caption(scene, rng, style)
    return text
