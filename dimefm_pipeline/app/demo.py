"""`dimefm demo`: the whole pipeline on the built-in hard world, ending in a teacher-vs-student report
with 95% intervals; `--quick` is a seconds-long cut of the easy world's demo (a smoke test: at 12
steps its student is near chance by design)."""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

from dimefm_pipeline.core.progress import make_console
from rich.table import Table

from dimefm_pipeline.app.pipeline import run_recipe
from dimefm_pipeline.app.recipes import distill_config, load_recipe

console = make_console()

QUICK = ("world.images=384", "world.texts=512", "world.per_shard=128", "encode.shard_size=128",
         "distill.steps=12", "distill.batch_size=32", "distill.text_batch_size=32", "distill.checkpoint_every=6",
         "distill.log_every=2", "mine.k=4")


def demo_suite(name: str, quick: bool):
    """The demo's evaluation suite: a cut of the full one that keeps the demo within minutes (the
    95% interval of a zero-shot mean is about +-1.2 points at the hard world's 1,000 test pictures
    per task); docs/results.md uses the full suites."""
    from dimefm_pipeline.world.hard.suite import HardSuiteConfig
    from dimefm_pipeline.world.suite import WorldSuiteConfig, resolve_suite

    if name == "world-hard":
        cfg = HardSuiteConfig(n_train=600, n_val=300, n_test=1000, n_shift=300, n_retrieval=300)
    else:
        cfg = WorldSuiteConfig.quick() if quick else WorldSuiteConfig(n_train=500, n_val=250, n_test=500, n_retrieval=300)
    return resolve_suite(name, cfg)


def run_demo(out: str | Path, *, quick: bool = False, overrides: tuple[str, ...] = ()) -> dict:
    """Run the world-demo recipe (`--quick`: a cut of world-easy-demo) into `out` and write
    report.json, summary.md and plots there."""
    from dimefm_pipeline.core import models
    from dimefm_pipeline.evaluation import evaluate
    from dimefm_pipeline.evaluation.intervals import result_intervals

    out = Path(out)
    name = "world-easy-demo" if quick else "world-demo"
    recipe = load_recipe(name, [*(QUICK if quick else ()), f"run.out={out}", *overrides])
    t0 = time.time()
    run_recipe(recipe, only=("world", "encode", "mine", "distill"))
    t_pipeline = time.time() - t0
    suite = demo_suite((recipe.section("eval") or {}).get("suite", "world"), quick)
    student_dir = Path(distill_config(recipe).out)
    console.rule("evaluation: teacher and student")
    evals = {}
    enc = recipe.section("encode")
    named = {"teacher": (enc.get("teacher", "world"), enc.get("pretrained")), "student": (str(student_dir), None)}
    for who, (spec, pretrained) in named.items():
        evals[who] = evaluate(models.load(spec, pretrained, quiet=True), suite, keep_correct=True)
    report = {
        "teacher": evals["teacher"],
        "student": evals["student"],
        "ratios": ratios(evals["teacher"], evals["student"]),
        "intervals": {who: {k: [v.low, v.high] for k, v in result_intervals(r).items()} for who, r in evals.items()},
        "recipe": recipe.raw,
        "seconds": {"pipeline": round(t_pipeline, 1), "total": round(time.time() - t0, 1)},
        "student_dir": str(student_dir),
    }
    out.mkdir(parents=True, exist_ok=True)
    (out / "report.json").write_text(json.dumps(report, indent=2))
    (out / "summary.md").write_text(summary_markdown(report))
    plot_per_task(report, out / "per_task_accuracy.png")
    if (student_dir / "loss_curves.png").exists():
        shutil.copy(student_dir / "loss_curves.png", out / "loss_curves.png")
    console.print(comparison_table(report))
    console.print(f"report: {out / 'report.json'}, {out / 'summary.md'}, {out / 'per_task_accuracy.png'}")
    return report


def ratios(teacher: dict, student: dict) -> dict:
    """Student / teacher for each headline mean."""
    out = {}
    for key in ("zero_shot_mean", "linear_probe_mean", "robustness_mean"):
        t, s = teacher.get(key), student.get(key)
        out[key] = (s / t) if t and s is not None else None
    return out


def _rows(report: dict):
    t, s = report["teacher"], report["student"]
    ci = report.get("intervals", {})
    for key, label in (("zero_shot_mean", "zero-shot mean"), ("linear_probe_mean", "linear probe mean"),
                       ("robustness_mean", "robustness mean")):
        yield label, _with_ci(t.get(key), ci.get("teacher", {}).get(key)), _with_ci(s.get(key), ci.get("student", {}).get(key)), \
            report["ratios"].get(key)
    for key in sorted(t.get("retrieval", {})):
        tv, sv = t["retrieval"][key], s.get("retrieval", {}).get(key)
        yield f"retrieval {key}", tv, sv, (sv / tv if tv else None)
    for task in t["tasks"]:
        tv, sv = t["tasks"][task]["zero_shot"], s["tasks"][task]["zero_shot"]
        yield f"zero-shot {task}", tv, sv, (sv / tv if tv else None)


def _with_ci(value, interval) -> tuple | float | None:
    return (value, interval) if value is not None and interval else value


def _fmt(v, pct=True) -> str:
    if isinstance(v, tuple):  # a mean with its 95% interval
        value, (lo, hi) = v
        return f"{100 * value:.1f} ({100 * lo:.1f}-{100 * hi:.1f})"
    return "-" if v is None else (f"{100 * v:.1f}" if pct else f"{v:.3f}")


def comparison_table(report: dict) -> Table:
    table = Table(title=f"{report['teacher'].get('suite', 'world')} suite: teacher vs distilled student "
                        "(accuracy %, 95% interval; ratio student/teacher)")
    for c in ("metric", "teacher", "student", "ratio"):
        table.add_column(c, justify="right" if c != "metric" else "left")
    for label, t, s, r in _rows(report):
        table.add_row(label, _fmt(t), _fmt(s), _fmt(r, pct=False))
    return table


def summary_markdown(report: dict) -> str:
    lines = ["# dimefm demo: world teacher distilled into the world student", "",
             f"Suite: {report['teacher'].get('suite', 'world')}. Accuracies in %, with the 95% bootstrap interval over "
             "test pictures in brackets.", "",
             f"Pipeline (corpora, encode, mine, distill): {report['seconds']['pipeline']} s; with evaluation: "
             f"{report['seconds']['total']} s.", "", "| metric | teacher | student | student / teacher |", "| --- | --- | --- | --- |"]
    lines += [f"| {label} | {_fmt(t)} | {_fmt(s)} | {_fmt(r, pct=False)} |" for label, t, s, r in _rows(report)]
    return "\n".join(lines) + "\n"


def plot_per_task(report: dict, path: Path) -> None:
    """Per task, teacher vs student: zero-shot and linear probe side by side, horizontal bars with
    their values written on them and an axis that starts below the lowest value, so differences near
    100% stay visible; the legend sits under the panels, never over a bar."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    tasks = list(report["teacher"]["tasks"])
    y = np.arange(len(tasks))
    metrics = (("zero_shot", "zero-shot"), ("linear_probe", "linear probe"))
    values = [report[w]["tasks"][t].get(m) or 0.0 for w in ("teacher", "student") for t in tasks for m, _ in metrics]
    lo = max(0.0, np.floor(min(values) * 10) / 10 - 0.05)
    fig, axes = plt.subplots(1, 2, figsize=(12, 0.55 * len(tasks) + 2.2), sharey=True)
    for ax, (metric, title) in zip(axes, metrics):
        for offset, who, colour in ((-0.2, "teacher", "#1f77b4"), (0.2, "student", "#ff7f0e")):
            vals = [report[who]["tasks"][t].get(metric) or 0.0 for t in tasks]
            bars = ax.barh(y + offset, vals, 0.38, color=colour, label=who)
            for bar, v in zip(bars, vals):
                ax.text(max(v, lo) - 0.002, bar.get_y() + bar.get_height() / 2, f"{100 * v:.1f}", ha="right",
                        va="center", fontsize=8, color="white" if v - lo > 0.08 * (1 - lo) else "black")
        ax.set_xlim(lo, 1.0)
        ax.set_title(f"{title} accuracy")
        ax.set_xlabel(f"accuracy (axis from {100 * lo:.0f}%)")
        ax.grid(axis="x", alpha=0.3)
    axes[0].set_yticks(y, tasks)
    axes[0].invert_yaxis()
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, ["teacher", "distilled student"], loc="lower center", ncol=2, frameon=False)
    fig.suptitle("world suite per task: teacher vs distilled student")
    fig.tight_layout(rect=(0, 0.07, 1, 1))
    fig.savefig(path, dpi=120)
    plt.close(fig)
