"""`--suite DIR`: a folder-per-class dataset with classnames.txt, evaluated zero-shot and by probe."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest
from PIL import Image
from typer.testing import CliRunner

from dimefm_pipeline.cli import app
from dimefm_pipeline.core.errors import DimefmError
from dimefm_pipeline.evaluation import evaluate
from dimefm_pipeline.evaluation.folder_suite import folder_suite
from dimefm_pipeline.world.suite import resolve_suite
from dimefm_pipeline.world.render import render
from dimefm_pipeline.world.scene import sample_object, sample_scene, scene_rng

CLASSES = {"ring_objects": "ring", "star_objects": "star", "square_objects": "square"}


def _dataset(root, per_class=15, split_layout=False):
    """Single-object world pictures sorted into one folder per shape."""
    root.mkdir()
    (root / "classnames.txt").write_text("\n".join(CLASSES[k] for k in sorted(CLASSES)) + "\n")
    for c, folder in enumerate(sorted(CLASSES)):
        for i in range(per_class):
            rng = scene_rng(77, c * 1000 + i)
            base = sample_scene(rng, n_objects=1)
            obj = sample_object(rng, base.objects[0].position, 64, shape=CLASSES[folder])
            split = ("train" if i < per_class - 5 else "test") if split_layout else ""
            out = root / split / folder
            out.mkdir(parents=True, exist_ok=True)
            Image.fromarray(render(replace(base, objects=(obj,)))).save(out / f"{i:03d}.png")
    return root


def test_flat_folder_dataset_is_split_deterministically_and_evaluated(tmp_path, world_teacher):
    root = _dataset(tmp_path / "shapes")
    suite = folder_suite(root)
    task = suite.tasks[0]
    assert task.classnames == ("ring", "square", "star")
    assert (len(task.train.labels), len(task.val.labels), len(task.test.labels)) == (27, 9, 9)
    assert list(folder_suite(root).tasks[0].test.labels) == list(task.test.labels)
    res = evaluate(world_teacher, resolve_suite(str(root)), progress=False)
    row = res["tasks"]["shapes"]
    # 3 classes (chance 1/3), 9 test images: the shipped teacher names these shapes (1.0 measured)
    assert row["zero_shot"] >= 7 / 9 and row["linear_probe"] >= 6 / 9
    assert res["retrieval"] == {} and res["robustness_mean"] is None


def test_cli_eval_on_a_split_folder_writes_json_and_plot(tmp_path):
    root = _dataset(tmp_path / "shapes", per_class=8, split_layout=True)
    (root / "templates.txt").write_text("a picture of a {c}.\na {c}.\n")
    out = tmp_path / "res.json"
    res = CliRunner().invoke(app, ["eval", "--model", "world", "--suite", str(root), "--json", str(out),
                                   "--plot", str(tmp_path / "res.png")])
    assert res.exit_code == 0, res.output
    data = json.loads(out.read_text())
    assert {"zero_shot_mean", "linear_probe_mean", "robustness_mean", "retrieval", "tasks"} <= set(data)
    assert data["tasks"]["shapes"]["n_test"] == 15
    assert 0.0 <= data["zero_shot_mean"] <= 1.0
    assert (tmp_path / "res.png").stat().st_size > 5000
    assert "zero-shot" in res.output


def test_folder_without_matching_classnames_is_refused(tmp_path):
    root = _dataset(tmp_path / "shapes", per_class=3)
    (root / "classnames.txt").write_text("ring\nsquare\n")
    with pytest.raises(DimefmError, match="2 names but there are 3 class folders"):
        folder_suite(root)
    with pytest.raises(DimefmError, match="no classnames.txt"):
        folder_suite(tmp_path)


def test_class_names_and_templates_can_come_from_files_or_open_clips_sets(tmp_path, world_teacher):
    root = _dataset(tmp_path / "shapes", per_class=8)
    (root / "classnames.txt").unlink()
    (tmp_path / "names.txt").write_text("hoop; ring\nsquare; box\nstar\n")  # sorted folder order; the first name is used
    suite = folder_suite(root, classes=str(tmp_path / "names.txt"), templates="simple")
    task = suite.tasks[0]
    assert task.classnames == ("hoop", "square", "star") and "{c}" in task.templates[0] and len(task.templates) == 7
    with pytest.raises(DimefmError, match="no classnames.txt"):
        folder_suite(root)
    (tmp_path / "bad.txt").write_text("a photo of a thing\n")
    with pytest.raises(DimefmError, match="needs \\{c\\}"):
        folder_suite(root, classes=str(tmp_path / "names.txt"), templates=str(tmp_path / "bad.txt"))
    res = CliRunner().invoke(app, ["eval", "--model", "world", "--suite", str(root), "--classes", str(tmp_path / "names.txt"),
                                   "--templates", "openai", "--no-probe", "--json", str(tmp_path / "r.json")])
    assert res.exit_code == 0, res.output
    assert json.loads((tmp_path / "r.json").read_text())["tasks"]["shapes"]["zero_shot"] >= 0.7
