"""The shipped hard-world teacher sits well below the ceiling and well above chance on every task."""

from __future__ import annotations

import json

from typer.testing import CliRunner

from dimefm_pipeline.cli import app


def test_the_hard_teacher_is_neither_saturated_nor_random(tmp_path):
    out = tmp_path / "teacher.json"
    result = CliRunner().invoke(app, ["eval", "--model", "world-hard", "--suite", "world-hard", "--quick", "--no-probe",
                                      "--json", str(out)])
    assert result.exit_code == 0, result.output
    tasks = json.loads(out.read_text())["tasks"]
    zero_shot = {name: row["zero_shot"] for name, row in tasks.items()}
    assert len(zero_shot) == 6
    # the full suite puts every task in 0.39-0.92 and the mean at 0.79 (docs/world-teacher.md);
    # the quick cut (400 pictures a task) moves a task by up to about 5 points
    assert 0.55 <= sum(zero_shot.values()) / 6 <= 0.88, zero_shot
    assert all(0.30 <= v <= 0.97 for v in zero_shot.values()), zero_shot
    assert all(v > 3 * row["chance"] for v, row in zip(zero_shot.values(), tasks.values())), zero_shot
