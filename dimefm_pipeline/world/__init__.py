"""The embedded default world: a seeded compositional scene generator, its caption grammar and
checker, unpaired corpora in real formats, and the small teacher trained on it.

Everything is deterministic: the same seed gives the same scenes, pixels, sentences and bytes.
"""

from dimefm_pipeline.world.captions import CaptionStyle, caption
from dimefm_pipeline.world.checker import check_caption
from dimefm_pipeline.world.render import STANDARD, RenderStyle, render
from dimefm_pipeline.world.scene import Scene, WorldObject, sample_scene, scene_rng

__all__ = ["CaptionStyle", "RenderStyle", "STANDARD", "Scene", "WorldObject", "caption", "check_caption",
           "render", "sample_scene", "scene_rng"]
