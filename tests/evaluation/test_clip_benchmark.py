"""dimefm and CLIP_benchmark agree: the same model on the same data gives the same zero-shot numbers.

CLIP_benchmark 1.6.2 runs in this process, offline, the way `clip_benchmark eval --dataset wds/NAME
--dataset_root DIR --model_type open_clip --model local-dir:FOLDER --no_amp` runs it (its own model
loader, dataset builder, loader over `dataset.batched(...)` and zero-shot metrics), in fp32.
"""

from __future__ import annotations

import json
import math
import tarfile
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from dimefm_pipeline.cli import app
from dimefm_pipeline.core.models import load as load_eval_model
from dimefm_pipeline.evaluation import evaluate
from dimefm_pipeline.evaluation.clip_benchmark import export_suite
from dimefm_pipeline.world.suite import WorldSuiteConfig, world_suite

N_TEST = 100  # test images per task: enough for numbers with room to differ, fast on a CPU
CUT = WorldSuiteConfig(n_train=0, n_val=0, n_test=N_TEST, shifts=("noise_blur",))


def cut_suite():
    """The world suite's first N_TEST test images per task, with their noise-and-blur copies (the
    shipped teacher names every clean test image right, so the shift is where numbers can differ)."""
    return world_suite(CUT, retrieval=False)


def _accuracy(output, target, topk=(1,)):
    """CLIP_benchmark's top-k accuracy with the count read by `float()` of a 0-d tensor: its own
    `float(...numpy())` of a one-element array fails on NumPy >= 2.4."""
    pred = output.topk(max(topk), 1, True, True)[1].t()
    correct = pred.eq(target.view(1, -1).expand_as(pred))
    return [float(correct[:k].reshape(-1).float().sum()) / len(target) for k in topk]


@pytest.fixture(scope="module")
def clip_benchmark():
    """CLIP_benchmark's zero-shot classification: (model folder, dataset folder) -> its metrics."""
    from clip_benchmark.datasets.builder import build_dataset
    from clip_benchmark.metrics import zeroshot_classification
    from clip_benchmark.models import load_clip

    original = zeroshot_classification.accuracy
    try:
        original(torch.eye(2), torch.tensor([0, 1]))
    except TypeError:
        zeroshot_classification.accuracy = _accuracy

    loaded = {}

    def run(model_dir: Path, dataset: Path) -> dict:
        if model_dir not in loaded:
            loaded[model_dir] = load_clip(model_type="open_clip", model_name=f"local-dir:{model_dir}",
                                          pretrained=None, cache_dir=None, device="cpu")
            loaded[model_dir][0].eval()
        model, transform, tokenizer = loaded[model_dir]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ds = build_dataset(dataset_name=f"wds/{dataset.name}", root=str(dataset), transform=transform,
                               split="test", download=True, task="zeroshot_classification")
            loader = torch.utils.data.DataLoader(ds.batched(64), batch_size=None, shuffle=False, num_workers=0)
            return zeroshot_classification.evaluate(model, loader, tokenizer, ds.classes, ds.templates,
                                                    device="cpu", amp=False)

    yield run
    zeroshot_classification.accuracy = original


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """The cut of the world suite in CLIP_benchmark's layout, shifted test sets included."""
    out = tmp_path_factory.mktemp("wds") / "world"
    export_suite(cut_suite(), out, shifts=True)
    return out


@pytest.fixture(scope="module")
def teacher_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("hub") / "world-teacher"
    res = CliRunner().invoke(app, ["world", "export-teacher", "--out", str(out)])
    assert res.exit_code == 0, res.output
    return out


@pytest.fixture(scope="module")
def student_dir(tmp_path_factory):
    """A student folder written by the student writer. Its weights are the world teacher's with
    noise (30% of each tensor's spread), so that it is right on some images and wrong on others: a
    student with random weights names one class for every image, where agreement says little."""
    import open_clip

    from dimefm_pipeline.distill.student import Student, save_student

    loaded = load_eval_model("world", quiet=True)
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in loaded.model.parameters():
            if p.numel() > 1:  # the logit scale stays
                p.add_(0.3 * p.std() * torch.randn(p.shape, generator=g))
    student = Student(loaded.model, "noisy-world-student", loaded.spec.config, None, loaded.image_size,
                      open_clip.OPENAI_DATASET_MEAN, open_clip.OPENAI_DATASET_STD)
    out = tmp_path_factory.mktemp("hub") / "student"
    save_student(student, out, logit_scale=100.0)
    return out


def _files(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_suite_export_is_clip_benchmarks_layout_with_the_same_bytes_every_run(tmp_path):
    for name in ("a", "b"):
        res = CliRunner().invoke(app, ["world", "export-suite", "--out", str(tmp_path / name), "--n-test", "12"])
        assert res.exit_code == 0, res.output
    files = _files(tmp_path / "a")
    assert files == _files(tmp_path / "b")
    assert {"world_shape/classnames.txt", "world_shape/zeroshot_classification_templates.txt",
            "world_shape/test/nshards.txt", "world_shape/test/0.tar", "suite.json"} <= set(files)
    assert files["world_count/classnames.txt"] == b"one object\ntwo objects\nthree objects\n"
    assert files["world_shape/test/nshards.txt"] == b"1\n"
    task = cut_suite().tasks[0]
    with tarfile.open(tmp_path / "a" / "world_shape" / "test" / "0.tar") as tar:
        members = tar.getmembers()
        assert [m.name for m in members[:4]] == ["s0000000.png", "s0000000.cls", "s0000001.png", "s0000001.cls"]
        assert {m.mtime for m in members} == {0} and len(members) == 24
        labels = [int(tar.extractfile(m).read()) for m in members if m.name.endswith(".cls")]
    assert labels == task.test.labels[:12].tolist()


def test_clip_benchmark_reads_the_export_as_the_suite_holds_it(exported):
    from clip_benchmark.datasets.builder import build_dataset

    task = next(t for t in cut_suite().tasks if t.name == "colour_shape")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ds = build_dataset(dataset_name="wds/world_colour_shape", root=str(exported / "world_colour_shape"),
                           transform=None, split="test", task="zeroshot_classification")
        samples = list(ds)
    assert ds.classes == list(task.classnames) and ds.templates == list(task.templates)
    assert [y for _, y in samples] == task.test.labels.tolist()
    rendered = task.test.images.load()
    assert all(np.array_equal(np.asarray(im), ref) for (im, _), ref in zip(samples, rendered))


def test_exported_teacher_is_the_shipped_teacher_in_a_readable_hub_folder(teacher_dir, world_teacher):
    import open_clip

    from dimefm_pipeline.core.models import state_fingerprint

    assert sorted(p.name for p in teacher_dir.iterdir()) == ["open_clip_config.json", "open_clip_model.safetensors"]
    assert {p.stat().st_mode & 0o777 for p in teacher_dir.iterdir()} == {0o644}
    model, _, _ = open_clip.create_model_and_transforms(f"local-dir:{teacher_dir}")
    assert state_fingerprint(model.state_dict()) == world_teacher.fingerprint
    about = json.loads((teacher_dir / "open_clip_config.json").read_text())["dimefm"]
    assert about["teacher"] == "world" and about["fingerprint"] == world_teacher.fingerprint


def _dimefm_eval(model: Path, suite: Path, out: Path) -> dict:
    res = CliRunner().invoke(app, ["eval", "--model", str(model), "--suite", str(suite), "--json", str(out)])
    assert res.exit_code == 0, res.output
    return json.loads(out.read_text())


@pytest.mark.slow
@pytest.mark.parametrize("which, with_shifts", [("student", False), ("teacher", True)])
def test_clip_benchmark_and_dimefm_eval_agree_per_task(which, with_shifts, request, exported, clip_benchmark, tmp_path):
    """Top-1 of dimefm on the suite in memory == dimefm eval on the export == CLIP_benchmark on the
    export, per task; acc5 and mean per-class recall as CLIP_benchmark reports them. The teacher is
    right on every clean image, so its shifted sets are compared too."""
    model_dir = request.getfixturevalue(f"{which}_dir")
    in_memory = evaluate(load_eval_model(str(model_dir), quiet=True), cut_suite(), probe=False, progress=False)
    on_disk = _dimefm_eval(model_dir, exported, tmp_path / "res.json")
    index = json.loads((exported / "suite.json").read_text())
    for entry in index["tasks"]:
        task, mine, ref = entry["task"], on_disk["tasks"][entry["task"]], in_memory["tasks"][entry["task"]]
        theirs = clip_benchmark(model_dir, exported / entry["dataset"])
        assert mine["zero_shot"] == ref["zero_shot"] == theirs["acc1"], task
        assert mine["zero_shot_mean_per_class_recall"] == theirs["mean_per_class_recall"], task
        assert mine["zero_shot_acc5"] == (None if math.isnan(theirs["acc5"]) else theirs["acc5"]), task
        for shift, dataset in entry["shifts"].items() if with_shifts else ():
            shifted = clip_benchmark(model_dir, exported / dataset)["acc1"]
            assert mine["robustness"][shift] == ref["robustness"][shift] == shifted, (task, shift)


class _Labelled(list):
    """(image, label) pairs with the `classes` and `templates` CLIP_benchmark's writer stores."""

    classes: list[str]
    templates: list[str]


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore:This DataLoader will create")  # its writer's fixed 8 workers
def test_dimefm_eval_on_a_dataset_written_by_clip_benchmark_gives_its_numbers(tmp_path, teacher_dir, clip_benchmark):
    from PIL import Image

    from clip_benchmark.webdataset_builder import PIL_to_bytes, convert_dataset

    task = next(t for t in cut_suite().tasks if t.name == "shape")
    shifted = task.shifts["noise_blur"]
    pairs = _Labelled((Image.fromarray(im), int(y)) for im, y in zip(shifted.images.load()[:120], shifted.labels))
    pairs.classes, pairs.templates = list(task.classnames), list(task.templates)
    root = tmp_path / "blurred_shapes"
    convert_dataset(pairs, "test", str(root), transform=PIL_to_bytes("webp"), max_count=40, verbose=False)
    assert (root / "test" / "nshards.txt").read_text() == "3\n"  # several shards, webp images

    mine = _dimefm_eval(teacher_dir, root, tmp_path / "res.json")["tasks"]["blurred_shapes"]
    theirs = clip_benchmark(teacher_dir, root)
    assert 0.0 < theirs["acc1"] < 1.0
    assert (mine["zero_shot"], mine["zero_shot_acc5"], mine["zero_shot_mean_per_class_recall"]) == (
        theirs["acc1"], theirs["acc5"], theirs["mean_per_class_recall"])
