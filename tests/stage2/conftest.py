"""A tiny real stage-one cache (images, sentences, mined pairs) shared by the stage-two tests."""

from __future__ import annotations

import json
import shutil

import pytest

from dimefm_pipeline.encode import EncodeConfig, encode
from dimefm_pipeline.mine import mine_cache
from tests.conftest import write_images

TINY_STUDENT = {
    "embed_dim": 32,
    "vision_cfg": {"image_size": 32, "layers": 1, "width": 32, "head_width": 16, "patch_size": 8},
    "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1},
}
WORDS = ["red", "blue", "green", "small", "large", "circle", "square", "cat", "dog", "tree", "car", "house"]


@pytest.fixture(scope="session")
def tiny_cache(teacher, tmp_path_factory):
    """(manifest path, student config path) of a cache with 64 images, 60 sentences and k=3 pairs."""
    root = tmp_path_factory.mktemp("stage2")
    write_images(root / "images", 64, size=(32, 32))
    sentences = [f"a {WORDS[i % 12]} {WORDS[(i * 5 + 1) % 12]} near a {WORDS[(i * 7 + 3) % 12]} number {i}" for i in range(60)]
    (root / "s.txt").write_text("\n".join(sentences) + "\n")
    cache = root / "m" / "run1.duckdb"
    common = dict(teacher=str(teacher[0]), pretrained=str(teacher[1]), workers=0, batch_size=16, shard_size=16)
    encode(EncodeConfig("image", (str(root / "images"),), str(cache), **common), progress=False)
    encode(EncodeConfig("text", (str(root / "s.txt"),), str(cache), **common), progress=False)
    mine_cache(str(cache), 3, progress=False)
    student = root / "tiny-student.json"
    student.write_text(json.dumps(TINY_STUDENT))
    return cache, student


@pytest.fixture
def cache_copy(tiny_cache, tmp_path):
    """A private copy of the tiny cache (tests that write runs into the manifest)."""
    cache, student = tiny_cache
    dst = tmp_path / "m"
    shutil.copytree(cache.parent, dst)
    return dst / cache.name, student
