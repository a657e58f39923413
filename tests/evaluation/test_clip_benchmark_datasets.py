"""Reading CLIP_benchmark's WebDataset datasets: tar members grouped as webdataset groups them, a
train split for the probe, and every broken part of the layout a one-line error."""

from __future__ import annotations

import io
import tarfile
import warnings
from pathlib import Path

import pytest
from PIL import Image

from dimefm_pipeline.core.errors import DimefmError
from dimefm_pipeline.evaluation import evaluate
from dimefm_pipeline.evaluation.clip_benchmark import clip_benchmark_suite, write_dataset
from dimefm_pipeline.world.suite import WorldSuiteConfig, resolve_suite, world_suite
from tests.conftest import run_cli


def _hand_made(root: Path, members: dict[str, bytes], files: dict[str, str | None] | None = None) -> Path:
    """A one-shard dataset written member by member; `files` replace (or, as None, drop) its text
    files, to break one part of the layout at a time."""
    (root / "test").mkdir(parents=True)
    texts = {"classnames.txt": "ring\nstar\n", "zeroshot_classification_templates.txt": "a {c}.\n",
             "test/nshards.txt": "1\n", **(files or {})}
    for name, text in texts.items():
        if text is not None:
            (root / name).write_text(text)
    with tarfile.open(root / "test" / "0.tar", "w") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return root


def _png_bytes() -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (8, 8), (200, 30, 30)).save(buf, format="PNG")
    return buf.getvalue()


def test_members_group_as_webdataset_groups_them(tmp_path):
    from clip_benchmark.datasets.builder import build_dataset

    png = _png_bytes()
    root = _hand_made(tmp_path / "d", {"__meta__/info.json": b"{}", "a.PNG": png, "a.cls": b"1", "b.seg.png": png,
                                       "b.jpg": png, "b.cls": b" 0\n"})
    task = clip_benchmark_suite(root).tasks[0]
    assert task.classnames == ("ring", "star") and task.test.labels.tolist() == [1, 0]
    assert len(task.test.images.load()) == 2 and len(task.train.labels) == 0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        theirs = build_dataset(dataset_name="wds/d", root=str(root), transform=None, split="test")
        assert [y for _, y in theirs] == [1, 0] and theirs.classes == ["ring", "star"]


@pytest.mark.parametrize("members, files, message", [
    ({"a.png": b"png"}, {}, "sample a has no .cls member"),
    ({"a.png": b"png", "a.cls": b"ring"}, {}, "a.cls is not a class index"),
    ({"a.png": b"png", "a.cls": b"2"}, {}, "outside the 2 classes"),
    ({"a.txt": b"caption", "a.cls": b"0"}, {}, "sample a has no image member"),
    ({"a.png": b"png", "a.cls": b"0"}, {"classnames.txt": None}, "it has no classnames.txt"),
    ({"a.png": b"png", "a.cls": b"0"}, {"test/nshards.txt": "2\n"}, "1.tar is missing"),
    ({"a.png": b"png", "a.cls": b"0"}, {"dataset_type.txt": "retrieval\n"}, "is a CLIP_benchmark retrieval dataset"),
    ({"a.png": b"png", "a.cls": b"0"}, {"test/nshards.txt": "0\n"}, "a split needs at least one"),
])
def test_a_broken_dataset_is_a_one_line_error(tmp_path, members, files, message):
    root = _hand_made(tmp_path / "d", members, files)
    with pytest.raises(DimefmError, match=message):
        clip_benchmark_suite(root)


def test_a_shard_that_is_not_a_tar_is_a_one_line_error(tmp_path):
    root = _hand_made(tmp_path / "d", {})
    (root / "test" / "0.tar").write_bytes(b"these bytes are not a tar archive" * 20)
    with pytest.raises(DimefmError, match="cannot read tar shard"):
        clip_benchmark_suite(root)


def test_cli_refuses_bad_datasets_and_outputs_without_a_traceback(tmp_path):
    root = _hand_made(tmp_path / "nocls", {"a.png": _png_bytes()})
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("x")
    for args, message in [(["eval", "--model", "world", "--suite", root], "has no .cls member"),
                          (["world", "export-teacher", "--model", "world-x", "--out", tmp_path / "t"],
                           "unknown shipped teacher 'world-x'"),
                          (["world", "export-suite", "--out", tmp_path / "full"], "is not an empty folder")]:
        r = run_cli(*args)
        assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr
        assert r.stderr.startswith("error:") and message in r.stderr and r.stderr.count("\n") == 1, r.stderr


def test_a_train_split_feeds_the_linear_probe(tmp_path, world_teacher):
    task = world_suite(WorldSuiteConfig(n_train=40, n_val=0, n_test=20, shifts=()), tasks=("shape",)).tasks[0]
    root = tmp_path / "shapes"
    for split, labelled in (("test", task.test), ("train", task.train)):
        write_dataset(root, task.classnames, task.templates, labelled.images.load(), labelled.labels, split=split)
    read = clip_benchmark_suite(root).tasks[0]
    assert (len(read.train.labels), len(read.val.labels), len(read.test.labels)) == (32, 8, 20)
    assert read.val.labels.tolist() == task.train.labels[4::5].tolist()
    row = evaluate(world_teacher, resolve_suite(root), progress=False)["tasks"]["shapes"]
    assert row["zero_shot"] == 1.0 and row["linear_probe"] is not None
