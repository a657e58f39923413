"""Unpaired world corpora in the formats real data comes in.

Images: a folder of PNGs (in sub-folders of bounded size) or WebDataset tar shards whose members are
`KEY.png`. Sentences: `.txt` (one per line) or JSONL (`{"key", "text"}`). Image `i` and sentence
`i` come from different random streams, so the two corpora are unpaired, and a share of the
sentences are non-visual distractors. Same seed, same bytes: PNGs are encoded without timestamps
and tar members carry fixed metadata.
"""

from __future__ import annotations

import io
import json
import tarfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
from PIL import Image

from dimefm_pipeline.core.errors import DimefmError
from dimefm_pipeline.world.captions import CaptionStyle, caption
from dimefm_pipeline.world.distractors import distractor_sentence
from dimefm_pipeline.world.render import render
from dimefm_pipeline.world.scene import sample_scene, scene_rng

IMAGE_STREAM = 2  # random stream of corpus images
TEXT_STREAM = 3  # ... of corpus sentences (independent of the images)
IMAGE_FORMATS = ("folder", "webdataset")
TEXT_FORMATS = ("txt", "jsonl")
WORLDS = ("easy", "hard")  # the built-in worlds: today's six-task world, and the hard one (world/hard/)


def _check_world(world: str) -> None:
    if world not in WORLDS:
        raise DimefmError(f"unknown world {world!r}: use one of {', '.join(WORLDS)}")


@dataclass(frozen=True)
class ImageCorpusConfig:
    """What `write_images` produces."""

    n: int  # number of images
    fmt: str = "folder"  # "folder" or "webdataset"
    seed: int = 0  # corpus seed
    per_shard: int = 1000  # images per sub-folder or tar shard
    size: int = 64  # image side in pixels
    world: str = "easy"  # "easy" or "hard"


@dataclass(frozen=True)
class TextCorpusConfig:
    """What `write_texts` produces."""

    n: int  # number of sentences
    fmt: str = "txt"  # "txt" or "jsonl"
    seed: int = 0  # corpus seed
    distractor_share: float = 0.3  # share of non-visual sentences
    max_tokens: int | None = 32  # the world teacher's context: longer sentences are redrawn shorter (None: no limit)
    world: str = "easy"  # "easy" or "hard"


def corpus_image(seed: int, index: int, size: int = 64, world: str = "easy") -> np.ndarray:
    """Image `index` of the corpus with `seed` (the hard world draws at its own 64 px)."""
    if world == "hard":
        from dimefm_pipeline.world.hard.corpus import hard_image

        return hard_image(seed, index)
    return render(sample_scene(scene_rng(seed, index, IMAGE_STREAM), size=size))


# Captions redrawn with fewer attributes when one is longer than the context: positions go first, then sizes.
SHORTER = (CaptionStyle(p_position=0.0), CaptionStyle(p_position=0.0, p_size=0.0), CaptionStyle(0.0, 0.0, 0.0, 1.0, 0.0))


def corpus_sentence(seed: int, index: int, distractor_share: float = 0.3, max_tokens: int | None = None,
                    world: str = "easy") -> str:
    """Sentence `index` of the corpus with `seed`: a caption of an unseen scene, or a distractor. With
    `max_tokens`, a sentence the teacher's tokenizer would cut is redrawn (same scene, fewer attributes;
    another distractor), so every cached sentence is read whole."""
    if world == "hard":
        from dimefm_pipeline.world.hard.corpus import hard_sentence

        fits = (lambda text: _tokens(text) <= max_tokens) if max_tokens else None
        return hard_sentence(seed, index, distractor_share, fits)
    rng = scene_rng(seed, index, TEXT_STREAM)
    if rng.random() < distractor_share:
        text = distractor_sentence(rng)
        while max_tokens and _tokens(text) > max_tokens:
            text = distractor_sentence(rng)
        return text
    scene = sample_scene(rng)
    text = caption(scene, rng)
    for style in SHORTER:
        if not max_tokens or _tokens(text) <= max_tokens:
            break
        text = caption(scene, rng, style)
    return text


_TOKENIZER = None


def _tokens(text: str) -> int:
    """Tokens the CLIP tokenizer gives `text`, start and end tokens included."""
    global _TOKENIZER
    if _TOKENIZER is None:
        from open_clip.tokenizer import SimpleTokenizer

        _TOKENIZER = SimpleTokenizer()
    return len(_TOKENIZER.encode(text)) + 2


def png_bytes(img: np.ndarray) -> bytes:
    """Deterministic PNG encoding (no metadata chunks)."""
    buf = io.BytesIO()
    # Level 1: as small as level 6 on these noisy backgrounds, and about twice as fast to write.
    Image.fromarray(img).save(buf, format="PNG", compress_level=1)
    return buf.getvalue()


def _key(i: int) -> str:
    return f"{i:08d}"


def _check_out(out: Path, n: int) -> None:
    if n < 1:
        raise DimefmError(f"--n must be at least 1 (got {n})")
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise DimefmError(f"{out} already exists and is not an empty folder: name a new --out, or remove it")


def write_images(out: str | Path, cfg: ImageCorpusConfig, *, on_progress: Callable[[int], None] | None = None) -> list[Path]:
    """Write the image corpus under `out`; returns the sub-folders or shards written."""
    out = Path(out)
    if cfg.fmt not in IMAGE_FORMATS:
        raise DimefmError(f"unknown image format {cfg.fmt!r}: use one of {', '.join(IMAGE_FORMATS)}")
    _check_world(cfg.world)
    _check_out(out, cfg.n)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for shard, start in enumerate(range(0, cfg.n, cfg.per_shard)):
        stop = min(cfg.n, start + cfg.per_shard)
        if cfg.fmt == "folder":
            written.append(_write_folder_shard(out / f"{shard:05d}", cfg, start, stop, on_progress))
        else:
            written.append(_write_tar_shard(out / f"shard-{shard:05d}.tar", cfg, start, stop, on_progress))
    return written


def _write_folder_shard(folder: Path, cfg, start, stop, on_progress) -> Path:
    folder.mkdir()
    for i in range(start, stop):
        (folder / f"{_key(i)}.png").write_bytes(png_bytes(corpus_image(cfg.seed, i, cfg.size, cfg.world)))
        if on_progress:
            on_progress(1)
    return folder


def _write_tar_shard(path: Path, cfg, start, stop, on_progress) -> Path:
    tmp = path.with_name(path.name + ".tmp")  # a shard appears only once complete
    with tarfile.open(tmp, "w", format=tarfile.USTAR_FORMAT) as tf:
        for i in range(start, stop):
            data = png_bytes(corpus_image(cfg.seed, i, cfg.size, cfg.world))
            info = tarfile.TarInfo(f"{_key(i)}.png")
            info.size, info.mtime, info.mode = len(data), 0, 0o644
            info.uid = info.gid = 0
            info.uname = info.gname = ""
            tf.addfile(info, io.BytesIO(data))
            if on_progress:
                on_progress(1)
    tmp.rename(path)
    return path


def sentences(cfg: TextCorpusConfig) -> Iterator[str]:
    """The sentences of the text corpus, in order."""
    if not 0.0 <= cfg.distractor_share <= 1.0:
        raise DimefmError(f"--distractor-share must be in [0, 1] (got {cfg.distractor_share})")
    for i in range(cfg.n):
        yield corpus_sentence(cfg.seed, i, cfg.distractor_share, cfg.max_tokens, cfg.world)


def write_texts(out: str | Path, cfg: TextCorpusConfig, *, on_progress: Callable[[int], None] | None = None) -> Path:
    """Write the sentence corpus to the file `out` (.txt or .jsonl)."""
    out = Path(out)
    if cfg.fmt not in TEXT_FORMATS:
        raise DimefmError(f"unknown text format {cfg.fmt!r}: use one of {', '.join(TEXT_FORMATS)}")
    _check_world(cfg.world)
    if cfg.n < 1:
        raise DimefmError(f"--n must be at least 1 (got {cfg.n})")
    if out.exists():
        raise DimefmError(f"{out} already exists: name a new --out, or remove it")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    with open(tmp, "w", encoding="utf-8", newline="\n") as f:
        for i, text in enumerate(sentences(cfg)):
            f.write(text + "\n" if cfg.fmt == "txt" else json.dumps({"key": _key(i), "text": text}) + "\n")
            if on_progress:
                on_progress(1)
    tmp.rename(out)
    return out
