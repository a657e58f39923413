"""`dimefm demo`: the whole pipeline on the built-in hard world, ending in a teacher-vs-student report
with 95% intervals; `--quick` is a short cut of the easy world's demo (a smoke test: at 12
steps its student is near chance by design)."""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

from dimefm_pipeline.core.progress import make_console
from rich.table import Table

from dimefm_pipeline.app.pipeline import run_recipe
from dimefm_pipeline.app.plots import plot_per_task
from dimefm_pipeline.app.recipes import distill_config, load_recipe

console = make_console()

# what --quick can show: that every stage runs, not that the student learns (it trains 12 steps)
QUICK_NOTE = ("--quick trains the student for 12 steps on 384 images, to show that every stage runs: a student near "
              "chance is expected at this budget. `dimefm demo` without --quick (about 7 minutes on 2 CPU cores) "
              "trains one that approaches the teacher.")
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
        "note": QUICK_NOTE if quick else None,
    }
    out.mkdir(parents=True, exist_ok=True)
    (out / "report.json").write_text(json.dumps(report, indent=2))
    (out / "summary.md").write_text(summary_markdown(report))
    plot_per_task(report, out / "per_task_accuracy.png")
    if (student_dir / "loss_curves.png").exists():
        shutil.copy(student_dir / "loss_curves.png", out / "loss_curves.png")
    console.print(comparison_table(report))
    if report["note"]:
        console.print(f"note: {report['note']}", highlight=False)
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
    if report.get("note"):
        lines += ["", f"Note: {report['note']}"]
    return "\n".join(lines) + "\n"
