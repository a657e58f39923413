"""Shared fixtures: a tiny real open_clip teacher with random weights saved to a local checkpoint,
and small real image and sentence corpora written to temp dirs."""

from __future__ import annotations

import json
import os
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

    from dimefm_pipeline import models

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
    """A plain read-only DuckDB connection to a manifest, opened as docs/sql-cookbook.md says: the
    manifest's folder as search path, so its views find their Parquet shards from any directory."""
    import duckdb

    con = duckdb.connect(str(cache), read_only=True)
    con.execute(f"SET file_search_path = '{Path(cache).parent}'")
    return con
