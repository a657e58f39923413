"""`dimefm demo --quick`: the whole offline pipeline on the built-in world, end to end."""

from __future__ import annotations

import json

from tests.conftest import run_cli


def test_quick_demo_writes_the_report_the_plots_and_a_loadable_student(tmp_path):
    out = tmp_path / "demo"
    r = run_cli("demo", "--quick", "--out", out, timeout=900)
    assert r.returncode == 0, r.stderr[-3000:]
    report = json.loads((out / "report.json").read_text())
    assert set(report) >= {"teacher", "student", "ratios", "recipe", "seconds"}
    for who in ("teacher", "student"):
        ev = report[who]
        assert {"zero_shot_mean", "linear_probe_mean", "robustness_mean", "retrieval", "tasks"} <= set(ev)
        assert all(0.0 <= row["zero_shot"] <= 1.0 for row in ev["tasks"].values())
    # the shipped teacher meets its bar here too (a random one scores about chance)
    assert report["teacher"]["zero_shot_mean"] >= 0.9
    assert (out / "summary.md").read_text().startswith("# dimefm demo")
    for png in ("per_task_accuracy.png", "loss_curves.png"):
        assert (out / png).stat().st_size > 5000
    assert "teacher vs distilled student" in r.stdout
    # stage one's cache is the same folder's manifest, with both modalities and mined pairs
    r = run_cli("sql", "--cache", out / "manifest.duckdb", "--csv",
                "SELECT (SELECT count(*) FROM items WHERE modality = 'image'), (SELECT count(*) FROM pseudo_pairs)")
    assert r.returncode == 0 and r.stdout.splitlines()[1] == "384,1536"
