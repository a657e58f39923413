"""dimefm installed from a wheel, used from a directory that is not the checkout.

The wheel is built from this checkout and installed, without dependencies, into a fresh virtual
environment that borrows the test environment's dependencies (torch, open_clip...) through a
`.pth` line; the checkout is nowhere on the path. From an empty directory it must run the quick
demo and the paper recipe (with a tiny teacher: random weights, 768-d like ViT-L/14), which reads
its student config from beside the recipe inside the installed package.
"""

from __future__ import annotations

import json
import os
import site
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
TINY_768 = {"embed_dim": 768, "vision_cfg": {"image_size": 32, "layers": 1, "width": 64, "head_width": 32, "patch_size": 16},
            "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 64, "heads": 2, "layers": 1}}


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """(python, dimefm) of a fresh venv holding the wheel of this checkout."""
    tmp = tmp_path_factory.mktemp("wheel")
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(tmp / "dist"),
                    str(ROOT)], check=True, capture_output=True, timeout=300)
    venv = tmp / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    py = venv / "bin" / "python"
    purelib = subprocess.run([str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], check=True,
                             capture_output=True, text=True).stdout.strip()
    # the test environment's packages, but not its editable dimefm (that lives in a .pth finder of its own)
    Path(purelib, "borrowed.pth").write_text("\n".join(site.getsitepackages()) + "\n")
    wheel = next((tmp / "dist").glob("dimefm-*.whl"))
    # without PYTHONPATH: pip would take a checkout on it (and the metadata the wheel build left there) for an install
    subprocess.run([sys.executable, "-m", "pip", "--python", str(py), "install", "--no-deps", "-q", str(wheel)], check=True,
                   capture_output=True, timeout=300, env=_env())
    return py, venv / "bin" / "dimefm"


def _env() -> dict:
    """This environment without PYTHONPATH: the checkout must be nowhere on the path."""
    return {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH",)}


def _run(cmd, cwd, timeout=600):
    env = {**_env(), "PYTHONWARNINGS": "ignore", "OMP_NUM_THREADS": "1"}
    return subprocess.run([str(c) for c in cmd], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


def test_the_wheel_is_what_runs(installed, tmp_path):
    py, _ = installed
    r = _run([py, "-c", "import dimefm_pipeline, sys; print(dimefm_pipeline.__file__)"], tmp_path)
    assert r.returncode == 0 and str(ROOT) not in r.stdout and "site-packages" in r.stdout, r.stdout + r.stderr
    r = _run([installed[1], "--version"], tmp_path)
    assert r.returncode == 0 and r.stdout.strip() == "dimefm 0.1.0", r.stdout + r.stderr


def test_quick_demo_from_any_directory_writes_the_report_the_plots_and_a_student(installed, tmp_path):
    import csv

    r = _run([installed[1], "demo", "--quick", "--out", "demo"], tmp_path)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-3000:]
    out = tmp_path / "demo"
    report = json.loads((out / "report.json").read_text())
    assert set(report) >= {"teacher", "student", "ratios", "recipe", "seconds"}
    for who in ("teacher", "student"):
        assert {"zero_shot_mean", "linear_probe_mean", "robustness_mean", "retrieval", "tasks"} <= set(report[who])
    assert report["teacher"]["zero_shot_mean"] >= 0.9  # the shipped teacher meets its bar (a random one: about chance)
    with open(out / "student" / "metrics.csv") as f:
        totals = [float(row["total"]) for row in csv.DictReader(f)]
    assert totals[-1] < 0.6 * totals[0]  # 12 steps: the student is learning (39.8 -> 15.6 measured)
    assert (out / "summary.md").read_text().startswith("# dimefm demo")
    for png in ("per_task_accuracy.png", "loss_curves.png"):
        assert (out / png).stat().st_size > 5000
    assert "teacher vs distilled student" in r.stdout
    assert (out / "student" / "open_clip_config.json").is_file()
    r = _run([installed[1], "sql", "--cache", out / "manifest.duckdb", "--csv",
              "SELECT (SELECT count(*) FROM items WHERE modality = 'image' AND view = 0), "
              "(SELECT count(*) FROM items WHERE modality = 'image'), (SELECT count(*) FROM pseudo_pairs)"], tmp_path)
    # 384 images, 4 cached views each (the demo recipe), k = 4 mined sentences per image
    assert r.returncode == 0 and r.stdout.splitlines()[1] == "384,1536,1536", r.stderr


def test_paper_recipe_from_any_directory_with_a_tiny_teacher(installed, tmp_path):
    from tests.conftest import write_images

    write_images(tmp_path / "data" / "imgs", 6, size=(40, 40))
    (tmp_path / "data" / "s.txt").write_text("".join(f"a photo of thing number {i}\n" for i in range(8)))
    (tmp_path / "tiny768.json").write_text(json.dumps(TINY_768))
    work = tmp_path / "elsewhere"
    work.mkdir()
    sets = ["data.images=['../data/imgs']", "data.texts=['../data/s.txt']", "encode.teacher='../tiny768.json'",
            "encode.pretrained='random'", "encode.workers=0", "encode.batch_size=4", "encode.precision='fp32'",
            "distill.steps=2", "distill.batch_size=2", "distill.text_batch_size=2", "distill.workers=0",
            "distill.precision='fp32'", "run.out='out'", "run.cache='out/m.duckdb'"]
    cmd = [installed[1], "run", "vitl14-to-vitb32", "--only", "encode", "--only", "distill"]
    for s in sets:
        cmd += ["--set", s]
    r = _run(cmd, work, timeout=900)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-3000:]
    cfg = json.loads((work / "out" / "student" / "open_clip_config.json").read_text())
    assert cfg["model_cfg"]["vision_cfg"]["patch_size"] == 32 and cfg["model_cfg"]["embed_dim"] == 768
