"""Progress lines in a log: none at 0 items, no item counts that are not items, no worker warnings."""

from __future__ import annotations

import io
import os

from dimefm_pipeline.core.progress import LogProgress
from tests.conftest import run_cli, write_images


def test_log_lines_wait_one_interval_and_never_report_zero_items():
    out = io.StringIO()
    log = LogProgress(out, interval=30)
    task = log.add_task("encode images (records)", total=100, items=0, rate=0.0)
    for i in range(1, 5):
        log.update(task, completed=i)  # a start-up burst: no line before an interval has passed
    assert out.getvalue() == ""
    log.print_all()
    line = out.getvalue()
    assert "4/100" in line and "items" not in line  # no "0 items 0.0 items/s"
    log.update(task, completed=10, items=640, rate=12.5)
    log.print_all()
    assert "640 items 12.5 items/s" in out.getvalue().splitlines()[-1]


def test_verify_counts_files_not_bytes_and_workers_beyond_the_cores_are_not_started(teacher, tmp_path):
    write_images(tmp_path / "imgs", 6, size=(16, 16))
    cache = tmp_path / "m" / "run.duckdb"
    workers = len(os.sched_getaffinity(0)) + 2
    r = run_cli("encode", "images", tmp_path / "imgs", "--cache", cache, "--teacher", teacher[0], "--pretrained",
                teacher[1], "--workers", workers, env={"PYTHONWARNINGS": "default"})
    assert r.returncode == 0, r.stderr
    assert "worker processes" not in r.stderr, r.stderr  # torch's warning of more workers than cores
    r = run_cli("info", "--cache", cache, "--verify")
    assert r.returncode == 0, r.stderr
    line = next(x for x in r.stdout.splitlines() if "verify files" in x)
    assert "3/3" in line and "items" not in line, line
