"""The charts: percent axes, a chance level per task, values that do not overlap, legends off the data."""

from __future__ import annotations

import csv

import pytest

from dimefm_pipeline.app.demo import QUICK_NOTE, summary_markdown
from dimefm_pipeline.app.plots import per_task_figure, results_figure
from dimefm_pipeline.distill.runlog import loss_figure

TASKS = ["shape", "colour", "count", "position", "size", "relation"]


def _result(level: float) -> dict:
    tasks = {t: {"zero_shot": min(1.0, level + 0.05 * i), "linear_probe": min(1.0, level + 0.1 + 0.04 * i),
                 "chance": 1 / (3 + i)} for i, t in enumerate(TASKS)}
    return {"suite": "world", "tasks": tasks, "zero_shot_mean": level, "robustness": {"blur": level - 0.1},
            "retrieval": {"image_to_text_r1": 0.4, "text_to_image_r1": 0.5}, "model": {"arch": "student"}}


def _boxes(fig):
    fig.canvas.draw()
    return fig.canvas.get_renderer()


def _ticks(ax, axis: str) -> list[str]:
    """The tick labels shown (ticks inside the axis's limits)."""
    lo, hi = getattr(ax, f"get_{axis}lim")()
    labels, values = getattr(ax, f"get_{axis}ticklabels")(), getattr(ax, f"get_{axis}ticks")()
    return [t.get_text() for t, v in zip(labels, values) if lo - 1e-9 <= v <= hi + 1e-9]


def _overlap(a, b) -> bool:
    return a.x0 < b.x1 and b.x0 < a.x1 and a.y0 < b.y1 and b.y0 < a.y1


def _legend_clear_of_axes(fig, renderer):
    legends = fig.legends + [ax.get_legend() for ax in fig.axes if ax.get_legend()]
    assert legends
    for legend in legends:
        box = legend.get_window_extent(renderer)
        for ax in fig.axes:  # the plotting area, its tick labels, axis labels and title
            taken = [ax.get_window_extent(renderer), ax.xaxis.get_tightbbox(renderer), ax.yaxis.get_tightbbox(renderer),
                     ax.title.get_window_extent(renderer)]
            assert all(not _overlap(box, t) for t in taken if t is not None and t.width > 0)
        assert box.x0 >= 0 and box.y0 >= 0 and box.x1 <= fig.bbox.x1 and box.y1 <= fig.bbox.y1  # inside the image


@pytest.mark.parametrize("student_level", [0.05, 0.97])  # a student at chance, one near the teacher
def test_per_task_chart(student_level):
    fig = per_task_figure({"teacher": _result(0.9), "student": _result(student_level)})
    r = _boxes(fig)
    for ax in fig.axes:
        ticks = _ticks(ax, "x")
        assert ticks[0] == "0%" and "100%" in ticks and all(t.endswith("%") for t in ticks)
        assert ax.get_xlim()[0] == 0
        texts = [t.get_window_extent(r) for t in ax.texts]
        assert len(texts) == 2 * len(TASKS)
        assert all(not _overlap(a, b) for i, a in enumerate(texts) for b in texts[i + 1:])
        assert all(ax.get_window_extent(r).x1 >= t.x1 for t in texts)  # every value inside its panel
        chance = [line for line in ax.lines if line.get_label() == "chance" or line.get_color() == "black"]
        assert sorted(round(line.get_xdata()[0], 4) for line in chance) == sorted(round(1 / (3 + i), 4) for i in range(6))
    assert [t.get_text() for t in fig.legends[0].get_texts()] == ["teacher", "distilled student", "chance"]
    _legend_clear_of_axes(fig, r)


def test_eval_chart_and_loss_curves_keep_their_legends_off_the_data(tmp_path):
    fig = results_figure(_result(0.6))
    r = _boxes(fig)
    for ax in fig.axes:
        labels = _ticks(ax, "y")
        assert labels[0] == "0%" and labels[-1] == "100%"
    _legend_clear_of_axes(fig, r)
    path = tmp_path / "metrics.csv"
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, ["step", "epoch", "lr", "seconds", "vl", "pvl", "vl_text", "pvl_text", "total"])
        w.writeheader()
        for s in range(1, 30):
            w.writerow({"step": s, "epoch": 0, "lr": 1e-3, "seconds": s, "vl": 5 / s, "pvl": 4 / s, "vl_text": 3 / s,
                        "pvl_text": 2 / s, "total": 9 / s})
    fig = loss_figure(path)
    _legend_clear_of_axes(fig, _boxes(fig))


def test_a_quick_demo_says_that_a_student_at_chance_is_expected():
    report = {"teacher": _result(0.9), "student": _result(0.05), "ratios": {}, "seconds": {"pipeline": 1, "total": 2},
              "note": QUICK_NOTE}
    assert "a student near chance is expected at this budget" in summary_markdown(report)
    assert "Note:" not in summary_markdown({**report, "note": None})
