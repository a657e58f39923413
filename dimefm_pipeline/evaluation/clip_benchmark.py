"""CLIP_benchmark's offline WebDataset datasets: read them as a suite, and write any suite as them.

One dataset, as `clip_benchmark eval --dataset wds/NAME --dataset_root DIR` reads it:

    DIR/classnames.txt                          one class name per line; a label indexes this list
    DIR/zeroshot_classification_templates.txt   one prompt template per line, `{c}` for the class
    DIR/{split}/nshards.txt                     how many tar shards the split has
    DIR/{split}/0.tar, 1.tar, ...               per sample `KEY.webp|png|jpg|jpeg` and `KEY.cls`

Lines are read stripped of surrounding blanks. `cls` is the class index in ASCII digits. Tar members
form samples as webdataset forms them: consecutive members sharing the name before the first dot,
the rest of the name (lower-cased) is the member's kind, `__*__` names are metadata; the first of
webp, png, jpg, jpeg present is the image. The test split is classified zero-shot; train and val,
where present, feed the linear probe (val defaults to every fifth train sample).

A suite is written as one dataset per task (`SUITE_TASK`, its test split; with `shifts`, also each
shifted test set as `SUITE_TASK_SHIFT`) beside `suite.json`, which names the task and shifts of each
dataset so that `dimefm eval --suite DIR` reads the folder back as the same tasks.
"""

from __future__ import annotations

import io
import json
import re
import tarfile
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
from PIL import Image

from dimefm_pipeline.core.errors import DimefmError
from dimefm_pipeline.evaluation.suite import ImageSet, LabelledSet, Suite, Task

CLASSNAMES = "classnames.txt"
TEMPLATES = "zeroshot_classification_templates.txt"
NSHARDS = "nshards.txt"
DATASET_TYPE = "dataset_type.txt"  # absent means classification; retrieval and multilabel are not read
INDEX = "suite.json"
IMAGE_KINDS = ("webp", "png", "jpg", "jpeg")  # the order CLIP_benchmark looks for a sample's image in
SAMPLES_PER_SHARD = 10_000  # CLIP_benchmark's own default when it writes a dataset
_META = re.compile(r"__[^/]*__($|/)")
_KEY_KIND = re.compile(r"^((?:.*/|)[^.]+)[.]([^/]*)$")


# --- reading -------------------------------------------------------------------------------------

def is_dataset(path: Path) -> bool:
    """True when `path` is one CLIP_benchmark WebDataset dataset (it has a test split)."""
    return (Path(path) / "test" / NSHARDS).is_file()


def is_clip_benchmark_folder(path: str | Path) -> bool:
    """True for a dataset, an exported suite (`suite.json`), or a folder of datasets."""
    path = Path(path)
    return is_dataset(path) or (path / INDEX).is_file() or any(is_dataset(p) for p in _subfolders(path))


def _subfolders(path: Path) -> list[Path]:
    return sorted(p for p in path.iterdir() if p.is_dir()) if path.is_dir() else []


def _lines(path: Path, what: str) -> tuple[str, ...]:
    if not path.is_file():
        raise DimefmError(f"{path.parent} is not a CLIP_benchmark classification dataset: it has no {path.name} ({what})")
    try:
        lines = tuple(line.strip() for line in path.read_text(encoding="utf-8").splitlines())
    except (OSError, UnicodeDecodeError) as exc:
        raise DimefmError(f"cannot read {path} as UTF-8 text: {exc}") from None
    if not lines:
        raise DimefmError(f"{path} is empty: it needs {what}")
    return lines


def _tar_samples(shard: Path) -> Iterator[tuple[str, dict[str, bytes]]]:
    """(key, {kind: bytes}) per sample of one tar shard, grouped as webdataset groups members."""
    key, sample = None, {}
    try:
        with tarfile.open(shard, "r|*") as tar:
            for info in tar:
                if not info.isreg() or _META.match(info.name):
                    continue
                parts = _KEY_KIND.match(info.name)
                if parts is None:
                    continue
                prefix, kind = parts.group(1), parts.group(2).lower()
                if prefix != key:
                    if sample:
                        yield key, sample
                    key, sample = prefix, {}
                if kind in sample:
                    raise DimefmError(f"{shard}: sample {key} has two .{kind} members")
                sample[kind] = tar.extractfile(info).read()
    except (tarfile.TarError, OSError, EOFError) as exc:
        raise DimefmError(f"cannot read tar shard {shard}: {exc}") from None
    if sample:
        yield key, sample


def _shards(folder: Path) -> list[Path]:
    try:
        n = int((folder / NSHARDS).read_text().strip())
    except (OSError, ValueError) as exc:
        raise DimefmError(f"{folder / NSHARDS} must hold the number of tar shards: {exc}") from None
    if n < 1:
        raise DimefmError(f"{folder / NSHARDS} says {n} shards: a split needs at least one")
    shards = [folder / f"{i}.tar" for i in range(n)]
    missing = [s.name for s in shards if not s.is_file()]
    if missing:
        raise DimefmError(f"{folder}: {NSHARDS} says {n} shards but {', '.join(missing)} "
                          f"{'is' if len(missing) == 1 else 'are'} missing")
    return shards


def _read_split(folder: Path, n_classes: int) -> tuple[list[tuple[str, bytes]], np.ndarray]:
    """The samples of one split: (where, image bytes) and the class index of each."""
    images, labels = [], []
    for shard in _shards(folder):
        for key, sample in _tar_samples(shard):
            kind = next((k for k in IMAGE_KINDS if k in sample), None)
            if kind is None:
                raise DimefmError(f"{shard}: sample {key} has no image member (.{', .'.join(IMAGE_KINDS)})")
            if "cls" not in sample:
                raise DimefmError(f"{shard}: sample {key} has no .cls member (its class index)")
            try:
                label = int(sample["cls"])
            except ValueError:
                raise DimefmError(f"{shard}: {key}.cls is not a class index: {sample['cls'][:16]!r}") from None
            if not 0 <= label < n_classes:
                raise DimefmError(f"{shard}: {key}.cls is {label}, outside the {n_classes} classes of classnames.txt")
            images.append((f"{shard}:{key}.{kind}", sample[kind]))
            labels.append(label)
    if not labels:
        raise DimefmError(f"{folder}: its tar shards hold no samples")
    return images, np.array(labels, dtype=np.int64)


def _decode(images: list[tuple[str, bytes]]) -> list[Image.Image]:
    out = []
    for where, data in images:
        try:
            with Image.open(io.BytesIO(data)) as im:
                out.append(im.convert("RGB"))
        except (OSError, ValueError, Image.DecompressionBombError) as exc:
            raise DimefmError(f"cannot decode image {where}: {exc}") from None
    return out


def _labelled(key: str, images: list[tuple[str, bytes]], labels: np.ndarray) -> LabelledSet:
    return LabelledSet(ImageSet(key, lambda: _decode(images), len(images)), labels)


def _splits(root: Path, n_classes: int) -> dict[str, LabelledSet]:
    """test, and train / val where the dataset has them (empty sets otherwise)."""
    key = f"wds:{root.resolve()}"
    read = {s: _read_split(root / s, n_classes) for s in ("test", "train", "val") if (root / s / NSHARDS).is_file()}
    if "train" in read and "val" not in read:
        images, labels = read["train"]
        held = np.arange(len(labels)) % 5 == 4
        read["val"] = ([im for im, h in zip(images, held) if h], labels[held])
        read["train"] = ([im for im, h in zip(images, held) if not h], labels[~held])
    empty = ([], np.zeros(0, dtype=np.int64))
    return {s: _labelled(f"{key}/{s}", *read.get(s, empty)) for s in ("train", "val", "test")}


def read_dataset(root: str | Path, name: str | None = None,
                 shifts: dict[str, Path] | None = None) -> Task:
    """One CLIP_benchmark dataset as a task; `shifts` names datasets whose test sets are shifted
    copies of this one's (same class names)."""
    root = Path(root)
    if not is_dataset(root):
        raise DimefmError(f"{root} is not a CLIP_benchmark dataset: it has no test/{NSHARDS}")
    kind = (root / DATASET_TYPE).read_text().strip().lower() if (root / DATASET_TYPE).is_file() else "classification"
    if kind != "classification":
        raise DimefmError(f"{root} is a CLIP_benchmark {kind} dataset; dimefm eval reads classification datasets")
    classnames = _lines(root / CLASSNAMES, "one class name per line")
    templates = _lines(root / TEMPLATES, "one prompt template per line")
    splits = _splits(root, len(classnames))
    shifted = {}
    for shift, folder in (shifts or {}).items():
        if not is_dataset(folder) or _lines(folder / CLASSNAMES, "class names") != classnames:
            raise DimefmError(f"{folder} (shift {shift} of {root.name}) is not a dataset with the same class names")
        shifted[shift] = _labelled(f"wds:{folder.resolve()}/test", *_read_split(folder / "test", len(classnames)))
    return Task(name or root.resolve().name, classnames, templates, splits["train"], splits["val"], splits["test"],
                shifted)


def clip_benchmark_suite(path: str | Path) -> Suite:
    """A suite from one dataset, an exported suite (its `suite.json`), or a folder of datasets."""
    path = Path(path)
    name = path.resolve().name
    if is_dataset(path):
        return Suite(name, (read_dataset(path),))
    if (path / INDEX).is_file():
        try:
            index = json.loads((path / INDEX).read_text())
            tasks = tuple(read_dataset(path / t["dataset"], t["task"],
                                       {s: path / d for s, d in t.get("shifts", {}).items()}) for t in index["tasks"])
        except (ValueError, KeyError, TypeError) as exc:
            raise DimefmError(f"{path / INDEX} does not describe an exported suite: {exc}") from None
        return Suite(name, tasks)
    datasets = [p for p in _subfolders(path) if is_dataset(p)]
    if not datasets:
        raise DimefmError(f"{path} is not a CLIP_benchmark dataset: no test/{NSHARDS} in it or in a sub-folder")
    return Suite(name, tuple(read_dataset(p) for p in datasets))


# --- writing -------------------------------------------------------------------------------------

def _text_file(path: Path, lines: tuple[str, ...], what: str) -> None:
    for line in lines:
        if "\n" in line or "\r" in line or line != line.strip() or not line:
            raise DimefmError(f"{what} {line!r} cannot be written as one line of {path.name}")
    path.write_text("".join(f"{line}\n" for line in lines), encoding="utf-8")


def _png(image) -> bytes:
    """Lossless PNG bytes of a PIL image or an HxWx3 uint8 array; PIL writes no time chunk."""
    im = image if isinstance(image, Image.Image) else Image.fromarray(np.asarray(image, dtype=np.uint8))
    buf = io.BytesIO()
    im.convert("RGB").save(buf, format="PNG", compress_level=6)
    return buf.getvalue()


def _add(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)  # fixed metadata: the same samples give the same bytes
    info.size, info.mtime, info.mode, info.uid, info.gid, info.uname, info.gname = len(data), 0, 0o444, 0, 0, "", ""
    tar.addfile(info, io.BytesIO(data))


def write_dataset(root: Path, classnames: tuple[str, ...], templates: tuple[str, ...], images: list,
                  labels: np.ndarray, *, split: str = "test", per_shard: int = SAMPLES_PER_SHARD,
                  on_progress: Callable[[int], None] | None = None) -> None:
    """Write one split of a dataset in CLIP_benchmark's WebDataset layout, byte for byte the same on
    every run: keys `s0000000`, `s0000001`... as CLIP_benchmark numbers samples."""
    (root / split).mkdir(parents=True)
    _text_file(root / CLASSNAMES, classnames, "class name")
    _text_file(root / TEMPLATES, templates, "template")
    n_shards = max(1, -(-len(labels) // per_shard))
    for s in range(n_shards):
        with tarfile.open(root / split / f"{s}.tar", "w", format=tarfile.USTAR_FORMAT) as tar:
            for i in range(s * per_shard, min(len(labels), (s + 1) * per_shard)):
                _add(tar, f"s{i:07d}.png", _png(images[i]))
                _add(tar, f"s{i:07d}.cls", str(int(labels[i])).encode("ascii"))
                if on_progress is not None:
                    on_progress(1)
    (root / split / NSHARDS).write_text(f"{n_shards}\n")


def export_size(suite: Suite, *, limit: int | None = None, shifts: bool = False) -> int:
    """How many images `export_suite` writes (for a progress display)."""
    sets = [s for t in suite.tasks for s in [t.test, *(t.shifts.values() if shifts else ())]]
    return sum(min(len(s.labels), limit if limit is not None else len(s.labels)) for s in sets)


def export_suite(suite: Suite, out: str | Path, *, limit: int | None = None, shifts: bool = False,
                 per_shard: int = SAMPLES_PER_SHARD, on_progress: Callable[[int], None] | None = None) -> list[str]:
    """Write every task of `suite` as a CLIP_benchmark dataset under `out` (absent or empty), with
    `suite.json`; `limit`: the first N test images of each task; `shifts`: the shifted test sets too.
    Returns the dataset names (`clip_benchmark eval --dataset wds/NAME`)."""
    out = Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise DimefmError(f"--out {out} already exists and is not an empty folder: name a new folder or remove it")
    loaded: dict[str, list] = {}  # tasks that share images render them once

    def write(name: str, task: Task, labelled: LabelledSet) -> str:
        if labelled.images.key not in loaded:
            loaded[labelled.images.key] = labelled.images.load()
        n = len(labelled.labels) if limit is None else min(limit, len(labelled.labels))
        write_dataset(out / name, task.classnames, task.templates, loaded[labelled.images.key][:n],
                      labelled.labels[:n], per_shard=per_shard, on_progress=on_progress)
        return name

    entries = []
    for task in suite.tasks:
        base = f"{suite.name}_{task.name}"
        entries.append({"task": task.name, "dataset": write(base, task, task.test),
                        "shifts": {s: write(f"{base}_{s}", task, ls) for s, ls in task.shifts.items() if shifts}})
    (out / INDEX).write_text(json.dumps({"suite": suite.name, "tasks": entries}, indent=2) + "\n")
    return [name for e in entries for name in (e["dataset"], *e["shifts"].values())]
