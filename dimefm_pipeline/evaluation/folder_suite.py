"""A user's own classification dataset as a suite (CLIP_benchmark's folder convention).

Layout: `DIR/classnames.txt` (one human-readable class name per line, in the sorted order of the
class folders) and images under either `DIR/{train,val,test}/CLASS/` or directly `DIR/CLASS/`. In the
second case each class is split deterministically 60/20/20 by a hash of the file path, so the split
never depends on file-system order. An optional `DIR/templates.txt` holds prompt templates with `{c}`.
Class names and templates can also be given (`dimefm eval --classes imagenet --templates openai`: the
sets open_clip ships, for an ImageNet-style folder whose class folders are the sorted synset ids); a
class line with `;`-separated synonyms uses the first name.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from dimefm_pipeline.core.errors import DimefmError
from dimefm_pipeline.evaluation.suite import ImageSet, LabelledSet, Suite, Task

IMAGE_EXTS = {".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif"}
DEFAULT_TEMPLATES = ("a photo of a {c}.", "a picture of a {c}.", "an image of a {c}.", "a photo of the {c}.")
SPLITS = ("train", "val", "test")


def _images_of(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_EXTS)


def _load(paths: list[Path]) -> list[Image.Image]:
    out = []
    for p in paths:
        try:
            with Image.open(p) as im:
                out.append(im.convert("RGB"))
        except (OSError, UnidentifiedImageError) as exc:
            raise DimefmError(f"cannot read image {p}: {exc}") from None
    return out


def _labelled(root: Path, key: str, items: list[tuple[Path, int]]) -> LabelledSet:
    paths = [p for p, _ in items]
    return LabelledSet(ImageSet(f"folder/{root}/{key}", lambda: _load(paths), len(paths)),
                       np.array([y for _, y in items], dtype=np.int64))


def _hash_split(paths: list[Path], root: Path) -> dict[str, list[Path]]:
    ranked = sorted(paths, key=lambda p: hashlib.sha1(p.relative_to(root).as_posix().encode()).hexdigest())
    n = len(ranked)
    n_test, n_val = max(1, n // 5), n // 5
    return {"test": ranked[:n_test], "val": ranked[n_test:n_test + n_val], "train": ranked[n_test + n_val:]}


def folder_suite(root: str | Path, *, classes: str | None = None, templates: str | None = None) -> Suite:
    """A one-task suite over the folder dataset at `root` (zero-shot and linear probe, no shifts).
    `classes` / `templates`: a file or a shipped set (`corpus.load_classes` / `load_templates`)."""
    from dimefm_pipeline.evaluation.classnames import load_classes, load_templates

    root = Path(root)
    names_file = root / "classnames.txt"
    if classes is not None:
        classnames = tuple(names[0] for names in load_classes(classes))
    elif not names_file.is_file():
        raise DimefmError(f"{root} is not a suite folder: it has no classnames.txt (or give --classes)")
    else:
        classnames = tuple(line.strip() for line in names_file.read_text(encoding="utf-8").splitlines() if line.strip())
    templates_file = root / "templates.txt"
    given = templates
    templates = DEFAULT_TEMPLATES
    if given is not None:
        templates = tuple(load_templates(given))
    elif templates_file.is_file():
        templates = tuple(t.strip() for t in templates_file.read_text(encoding="utf-8").splitlines() if t.strip())
        if not templates or any("{c}" not in t for t in templates):
            raise DimefmError(f"{templates_file}: every template line must contain {{c}}")

    split_layout = (root / "train").is_dir() and (root / "test").is_dir()
    class_root = root / "train" if split_layout else root
    folders = sorted(p.name for p in class_root.iterdir() if p.is_dir())
    if len(folders) != len(classnames):
        raise DimefmError(f"{root}: classnames.txt has {len(classnames)} names but there are "
                          f"{len(folders)} class folders in {class_root}")
    items: dict[str, list[tuple[Path, int]]] = {s: [] for s in SPLITS}
    for label, folder in enumerate(folders):
        if split_layout:
            parts = {s: _images_of(root / s / folder) if (root / s / folder).is_dir() else [] for s in SPLITS}
        else:
            parts = _hash_split(_images_of(root / folder), root)
        for split, paths in parts.items():
            items[split].extend((p, label) for p in paths)
    if not items["test"] or not items["train"]:
        raise DimefmError(f"{root}: need images in both the train and test splits")
    name = root.resolve().name
    task = Task(name, classnames, templates, *(_labelled(root.resolve(), s, items[s]) for s in SPLITS))
    return Suite(name, (task,), None)
