"""docs/results.md from the quality table's finished (row, seed) results: means over seeds, 95%
bootstrap intervals over test pictures, seed ranges, and claim-by-claim verdicts."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from dimefm_pipeline.evaluation.intervals import difference_interval, mean_interval, scores, verdict

METRICS = (("zero_shot_mean", "zero-shot"), ("linear_probe_mean", "linear probe"), ("robustness_mean", "robustness"))
ALL = tuple(m for m, _ in METRICS)
# (claim of the reference, row, baseline row, metrics it is about)
CLAIMS = (
    ("P-VL adds to VL", "distilled", "vl_only", ALL),
    ("UDist adds", "udist", "distilled", ALL),
    ("task prompts add zero-shot", "text_prompts", "distilled", ("zero_shot_mean",)),
    ("the distilled student rivals a paired student (same pictures seen)", "distilled", "paired", ALL),
    ("the distilled student (600 steps) rivals a paired student at the teacher's budget", "distilled",
     "paired_teacher_budget", ALL),
    ("distilled against paired, both at the teacher's steps and batch", "distilled_teacher_budget",
     "paired_teacher_budget", ALL),
    ("1,200 distillation steps against 600", "steps1200", "distilled", ALL),
    ("10,000 distillation steps against 600", "distilled_teacher_budget", "distilled", ALL),
    ("mined neighbours as half of each batch's sentences", "mined_share", "distilled", ALL),
    ("P-VL with mined pseudo captions adds", "pvl_mined", "distilled", ALL),
    ("reference mode (teacher's text tower) against both towers", "reference", "distilled", ALL),
    ("cached views against none", "views4", "distilled", ALL),
    ("cached views against on-the-fly augmentation", "views4", "aug", ALL),
    ("a filtered sentence corpus against the generic one", "text_filtered", "distilled", ("zero_shot_mean",)),
    ("1,000 pictures against 6,000", "low", "distilled", ("zero_shot_mean", "linear_probe_mean")),
    ("batch 64 against 128 (same pictures seen)", "batch64", "distilled", ALL),
    ("batch 256 against 128 (same pictures seen)", "batch256", "distilled", ALL),
    ("batch 512 against 128 (same pictures seen)", "batch512", "distilled", ALL),
    ("two teachers (mean) against the shipped teacher alone", "ensemble_mean", "distilled", ALL),
    ("two teachers (mean) against the second teacher alone", "ensemble_mean", "from_b", ALL),
    ("two teachers: mixed distributions against mean of KL terms", "ensemble_mixture", "ensemble_mean", ALL),
)


def load(out: Path, rows: dict) -> dict[str, list[dict]]:
    """name -> results of its finished seeds, in seed order."""
    found = {}
    for name in rows:
        paths = sorted((out / "results" / name).glob("seed*.json"), key=lambda p: int(p.stem[4:]))
        if paths:
            found[name] = [json.loads(p.read_text()) for p in paths]
    return found


def seed_range(results: list[dict], metric: str) -> float:
    """Highest minus lowest single-seed value (0 for one seed)."""
    per_seed = [r[metric] for r in results if r.get(metric) is not None]
    return float(max(per_seed) - min(per_seed)) if per_seed else 0.0


def stats(results: list[dict], metric: str) -> dict:
    """Mean over seeds, the seed range, and the 95% interval of the seed-averaged mean."""
    per_seed = [r[metric] for r in results if r.get(metric) is not None]
    found = scores(results, metric)
    ci = mean_interval(found[0], groups=found[1]) if found else None
    return {"mean": float(np.mean(per_seed)) if per_seed else None, "seeds": per_seed,
            "spread": seed_range(results, metric), "ci": ci}


def _pct(v) -> str:
    return "-" if v is None else f"{100 * v:.1f}"


def _cell(s: dict) -> str:
    if s["mean"] is None:
        return "- | - | -"
    ci = f"±{100 * s['ci'].half_width:.2f}" if s["ci"] else "-"
    spread = f"{100 * s['spread']:.1f}" if len(s["seeds"]) > 1 else "-"
    return f"{_pct(s['mean'])} | {ci} | {spread}"


def main_table(found: dict, rows: dict) -> list[str]:
    t = found.get("teacher", [None])[0]
    head = "| row | seeds | " + " | ".join(f"{label} | 95% | seed range" for _, label in METRICS) + \
        " | ZS / teacher | R@1 i2t | train min/run |"
    lines = [head, "| --- | ---: |" + " ---: | ---: | ---: |" * len(METRICS) + " ---: | ---: | ---: |"]
    for name, row in rows.items():
        if name not in found:
            continue
        rs = found[name]
        cells = " | ".join(_cell(stats(rs, m)) for m, _ in METRICS)
        zs = np.mean([r["zero_shot_mean"] for r in rs])
        ratio = f"{zs / t['zero_shot_mean']:.3f}" if t else "-"
        r1 = _pct(np.mean([r["retrieval"].get("image_to_text_R@1", np.nan) for r in rs]))
        train = np.mean([r.get("train_seconds", 0) for r in rs]) / 60
        lines.append(f"| {row.label} (`{name}`) | {len(rs)} | {cells} | {ratio} | {r1} | {train:.1f} |")
    return lines


def typical_spread(found: dict, metric: str) -> float:
    """The largest seed range of the rows run at several seeds: the stand-in for a one-seed row's."""
    return max((seed_range(rs, metric) for rs in found.values() if len(rs) > 1), default=0.0)


def claim_table(found: dict) -> list[str]:
    lines = ["| claim | row - baseline | metric | difference | 95% interval | seed range (larger) | verdict |",
             "| --- | --- | --- | ---: | --- | ---: | --- |"]
    one_seed = False
    for claim, a, b, metrics in CLAIMS:
        if a not in found or b not in found:
            lines.append(f"| {claim} | `{a}` - `{b}` | | | | | not measured |")
            continue
        for metric in metrics:
            sa, sb = scores(found[a], metric), scores(found[b], metric)
            if not sa or not sb:
                continue
            diff = difference_interval(sa[0], sb[0], groups=sa[1])
            spread = max(seed_range(found[a], metric), seed_range(found[b], metric))
            mark = ""
            if min(len(found[a]), len(found[b])) == 1:  # a one-seed row has no range of its own
                spread, mark, one_seed = max(spread, typical_spread(found, metric)), "*", True
            label = dict(METRICS)[metric]
            lines.append(f"| {claim} | `{a}` - `{b}` | {label} | {100 * diff.mean:+.2f} | "
                         f"{100 * diff.low:+.2f} to {100 * diff.high:+.2f} | {100 * spread:.2f}{mark} | "
                         f"{verdict(diff, spread)} |")
    if one_seed:
        lines += ["", "\\* One of the two rows ran one seed only: its seed range is taken to be the largest of the "
                  "rows run at three seeds."]
    return lines


def per_task_tables(found: dict) -> list[str]:
    tasks = list(next(iter(found.values()))[0]["tasks"])
    lines = []
    for title, key in (("Zero-shot accuracy per task (%, mean over seeds):", "zero_shot"),
                       ("Linear-probe accuracy per task (%, mean over seeds):", "linear_probe")):
        lines += ["", title, "", "| row | " + " | ".join(tasks) + " |", "| --- |" + " ---: |" * len(tasks)]
        for name, rs in found.items():
            vals = [np.mean([r["tasks"][k].get(key) or 0.0 for r in rs]) for k in tasks]
            lines.append(f"| `{name}` | " + " | ".join(_pct(v) for v in vals) + " |")
    shifts = list(next(iter(found.values()))[0]["robustness"])
    lines += ["", "Zero-shot accuracy under each shift (%, mean over tasks and seeds):", "",
              "| row | " + " | ".join(shifts) + " |", "| --- |" + " ---: |" * len(shifts)]
    for name, rs in found.items():
        lines.append(f"| `{name}` | " + " | ".join(_pct(np.mean([r["robustness"][s] for r in rs])) for s in shifts) + " |")
    return lines


def plot(found: dict, rows: dict, png: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [n for n in rows if n in found]
    x = np.arange(len(names))
    fig, ax = plt.subplots(figsize=(max(11, 0.9 * len(names) + 3), 5))
    for i, (metric, label) in enumerate(METRICS):
        st = [stats(found[n], metric) for n in names]
        means = np.array([s["mean"] or 0 for s in st])
        err = np.array([s["ci"].half_width if s["ci"] else 0 for s in st])
        ax.bar(x + (i - 1) * 0.27, 100 * means, 0.27, yerr=100 * err, capsize=2, label=label)
        for k, s in enumerate(st):  # every seed as a dot, so the run-to-run spread is seen
            ax.plot([x[k] + (i - 1) * 0.27] * len(s["seeds"]), [100 * v for v in s["seeds"]], "k.", ms=3)
    ax.set_xticks(x, names, rotation=25, ha="right")
    ax.set_ylabel("mean accuracy (%)")
    ax.set_ylim(0, 100)
    ax.grid(axis="y", alpha=0.3)
    ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0))
    ax.set_title("hard world: bars = mean over seeds with 95% interval over test pictures; dots = single seeds")
    fig.tight_layout()
    fig.savefig(png, dpi=120)
    plt.close(fig)


BATCH_ROWS = {"batch64": 64, "distilled": 128, "batch256": 256, "batch512": 512}  # 76,800 pictures seen by each


def batch_plot(found: dict, png: Path) -> bool:
    """Accuracy against batch size at the same pictures seen (with intervals and single seeds)."""
    names = [n for n in BATCH_ROWS if n in found]
    if len(names) < 2:
        return False
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7.5, 4.5))
    x = np.array([BATCH_ROWS[n] for n in names])
    for metric, label in METRICS:
        st = [stats(found[n], metric) for n in names]
        y = np.array([100 * s["mean"] for s in st])
        err = np.array([100 * s["ci"].half_width if s["ci"] else 0 for s in st])
        line = ax.errorbar(x, y, yerr=err, marker="o", capsize=3, label=label)[0]
        for xi, s in zip(x, st):
            ax.plot([xi] * len(s["seeds"]), [100 * v for v in s["seeds"]], ".", color=line.get_color(), ms=4, alpha=0.6)
    ax.set_xscale("log", base=2)
    ax.set_xticks(x, [str(v) for v in x])
    ax.set_xlabel("pictures (and sentences) per step; steps x batch = 76,800 pictures seen in every run")
    ax.set_ylabel("mean accuracy (%)")
    ax.grid(alpha=0.3)
    ax.legend()
    ax.set_title("hard world: batch size at the same pictures seen (line: mean of 3 seeds; dots: seeds)")
    fig.tight_layout()
    fig.savefig(png, dpi=120)
    plt.close(fig)
    return True


def write_report(out: Path, rows: dict, path: Path, *, steps: int) -> None:
    found = load(out, rows)
    if not found:
        return
    png = path.with_suffix(".png")
    plot(found, rows, png)
    notes = Path(__file__).with_name("world_quality_notes.md")
    lines = ["# Quality on the hard world", "",
             f"Produced by `python benchmarks/world_quality.py --jobs 2` ({steps} distillation steps per row) on CPU; "
             "setup, budget and reading below the tables. Accuracies in %. For every row: the mean over its seeds, "
             "the half-width of the 95% bootstrap interval of that mean over test pictures, and the range of "
             "the single seeds. A difference is called only when its paired-bootstrap interval excludes 0 and it "
             "is larger than the seed range of both rows; otherwise the verdict is \"within noise\".", ""]
    lines += main_table(found, rows) + ["", "Claims:", ""] + claim_table(found) + per_task_tables(found)
    lines += ["", f"![per-row means]({png.name})", ""]
    batch_png = path.with_name(path.stem + "-batch.png")
    if batch_plot(found, batch_png):
        lines += [f"![batch size at the same pictures seen]({batch_png.name})", ""]
    if notes.exists():
        lines += [notes.read_text().rstrip(), ""]
    path.write_text("\n".join(lines))
