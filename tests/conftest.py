"""Shared fixtures: a tiny real open_clip teacher with random weights saved to a local checkpoint,
small real image and sentence corpora written to temp dirs, and a tiny real stage-one cache
(images, sentences, mined pairs) for the tests of mining, training and the store."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

TINY_CONFIG = {
    "embed_dim": 32,
    "vision_cfg": {"image_size": 32, "layers": 2, "width": 64, "patch_size": 8},
    "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 64, "heads": 2, "layers": 2},
}


def write_tiny_teacher(folder: Path, name: str = "tiny-teacher", seed: int = 0, config: dict | None = None) -> tuple[Path, Path]:
    """Write an open_clip model config and a safetensors checkpoint of random weights."""
    import torch
    from safetensors.torch import save_file

    from dimefm_pipeline.core import models

    folder.mkdir(parents=True, exist_ok=True)
    cfg_path = folder / f"{name}.json"
    cfg_path.write_text(json.dumps(config or TINY_CONFIG))
    spec = models.resolve_spec(str(cfg_path), "random")
    loaded = models.build(spec, quiet=True)
    with torch.no_grad():
        g = torch.Generator().manual_seed(seed)
        for p in loaded.model.parameters():
            p.add_(torch.randn(p.shape, generator=g) * 0.01)
    ckpt = folder / f"{name}-s{seed}.safetensors"
    save_file({k: v.contiguous() for k, v in loaded.model.state_dict().items()}, str(ckpt))
    return cfg_path, ckpt


@pytest.fixture(scope="session")
def teacher(tmp_path_factory):
    """(config path, checkpoint path) of a tiny real open_clip teacher."""
    return write_tiny_teacher(tmp_path_factory.mktemp("teacher"))


def write_images(folder: Path, n: int, *, seed: int = 0, size=(40, 48), subdirs: bool = True) -> list[Path]:
    """n distinct random RGB PNGs (half of them in a subfolder)."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    paths = []
    for i in range(n):
        sub = folder / ("sub" if subdirs and i % 2 else "")
        sub.mkdir(parents=True, exist_ok=True)
        p = sub / f"img{i:04d}.png"
        Image.fromarray(rng.integers(0, 255, (*size, 3), dtype=np.uint8)).save(p)
        paths.append(p)
    return paths


@pytest.fixture
def images(tmp_path):
    root = tmp_path / "images"
    write_images(root, 24)
    return root


def run_cli(*args, cwd=None, env=None, timeout=300):
    """Run `python -m dimefm_pipeline ARGS` in a subprocess; returns CompletedProcess."""
    full_env = {**os.environ, "PYTHONWARNINGS": "ignore", **(env or {})}
    return subprocess.run([sys.executable, "-m", "dimefm_pipeline", *map(str, args)], cwd=cwd, env=full_env,
                          capture_output=True, text=True, timeout=timeout)


def plain_duckdb(cache):
    """A plain read-only DuckDB connection to a manifest, opened as docs/sql-cookbook.md says (its
    views find their Parquet shards from any working directory)."""
    import duckdb

    return duckdb.connect(str(cache), read_only=True)


def query(cache, sql: str) -> list:
    """The rows of `sql` over a manifest, through a plain DuckDB connection closed again."""
    con = plain_duckdb(cache)
    try:
        return con.execute(sql).fetchall()
    finally:
        con.close()


SOURCE_OPTIONS = ("image_column", "key_column", "text_field", "key_field", "text_column")


def encode_sources(teacher, modality: str, sources, cache, **kw):
    """Stage one in this process with a tiny teacher: source options (`text_column=...`) and
    EncodeConfig fields by name; no workers and batches of 4 unless given."""
    from dimefm_pipeline.encode.config import EncodeConfig
    from dimefm_pipeline.encode.run import encode

    opts = {k: kw.pop(k) for k in list(kw) if k in SOURCE_OPTIONS}
    kw.setdefault("workers", 0)
    kw.setdefault("batch_size", 4)
    cfg = EncodeConfig(modality, tuple(map(str, sources)), str(cache), teacher=str(teacher[0]), pretrained=str(teacher[1]),
                       source_options=opts, **kw)
    return encode(cfg, progress=False)


def image_bytes(mode: str = "RGB", size=(24, 20), seed: int = 0, fmt: str = "PNG", **save) -> bytes:
    """A random picture of `size` (width, height), saved in `fmt`."""
    import io

    from PIL import Image

    arr = np.random.default_rng(seed).integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(arr).convert(mode).save(buf, format=fmt, **save)
    return buf.getvalue()


TINY_STUDENT = {
    "embed_dim": 32,
    "vision_cfg": {"image_size": 32, "layers": 1, "width": 32, "head_width": 16, "patch_size": 8},
    "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1},
}
WORDS = ["red", "blue", "green", "small", "large", "circle", "square", "cat", "dog", "tree", "car", "house"]


@pytest.fixture(scope="session")
def tiny_cache(teacher, tmp_path_factory):
    """(manifest path, student config path) of a cache with 64 images, 60 sentences and k=3 pairs."""
    from dimefm_pipeline.encode.config import EncodeConfig
    from dimefm_pipeline.encode.run import encode
    from dimefm_pipeline.mine.config import MineConfig
    from dimefm_pipeline.mine.run import mine_cache

    root = tmp_path_factory.mktemp("stage2")
    write_images(root / "images", 64, size=(32, 32))
    sentences = [f"a {WORDS[i % 12]} {WORDS[(i * 5 + 1) % 12]} near a {WORDS[(i * 7 + 3) % 12]} number {i}" for i in range(60)]
    (root / "s.txt").write_text("\n".join(sentences) + "\n")
    cache = root / "m" / "run1.duckdb"
    common = dict(teacher=str(teacher[0]), pretrained=str(teacher[1]), workers=0, batch_size=16, shard_size=16)
    encode(EncodeConfig("image", (str(root / "images"),), str(cache), **common), progress=False)
    encode(EncodeConfig("text", (str(root / "s.txt"),), str(cache), **common), progress=False)
    mine_cache(MineConfig(str(cache), 3), progress=False)
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


# ---- a cache with a second teacher (tests of encode teacher and of distilling from both)
# another architecture: other embedding dim, image size, context length and width
B_CONFIG = {
    "embed_dim": 24,
    "vision_cfg": {"image_size": 40, "layers": 1, "width": 48, "head_width": 16, "patch_size": 8},
    "text_cfg": {"context_length": 12, "vocab_size": 49408, "width": 48, "heads": 2, "layers": 1},
}
N_IMAGES, VIEWS, N_TEXTS = 37, 3, 29


def sentences(n: int, start: int = 0) -> str:
    words = ["red", "blue", "round", "square", "tiny", "huge", "left", "right", "cat", "dog", "tree"]
    return "".join(f"a {words[i % 11]} {words[(i * 3 + 2) % 11]} and {words[(i * 7 + 5) % 11]} number {i}\n"
                   for i in range(start, start + n))


@pytest.fixture(scope="session")
def two_teacher_cache(teacher, tmp_path_factory):
    """A cache by teacher A with teacher B added, and B's own cache of the same sources."""
    root = tmp_path_factory.mktemp("two-teachers")
    write_images(root / "images", N_IMAGES, size=(40, 52))
    (root / "s.txt").write_text(sentences(N_TEXTS))
    tb = write_tiny_teacher(root / "tb", "teacher-b", seed=3, config=B_CONFIG)
    caches = {}
    for name, t in (("a", teacher), ("b", tb)):
        caches[name] = root / name / "run.duckdb"
        encode_sources(t, "image", [root / "images"], caches[name], views=VIEWS, shard_size=16, batch_size=7)
        encode_sources(t, "text", [root / "s.txt"], caches[name], shard_size=8, batch_size=5)
    from dimefm_pipeline.encode.teachers import AddTeacherConfig, add_teacher

    done = add_teacher(AddTeacherConfig(str(caches["a"]), str(tb[0]), str(tb[1]), name="b", batch_size=5), progress=False)
    return root, caches, tb, done
