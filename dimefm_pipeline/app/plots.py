"""The PNG charts of `dimefm demo` and `dimefm eval --plot`: accuracies on percent axes from 0, each
task's chance level drawn, values written beside their bars, legends outside the plotting area."""

from __future__ import annotations

from pathlib import Path

TEACHER, STUDENT = "#1f77b4", "#ff7f0e"


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _percent_axis(axis) -> None:
    """Accuracies are fractions in the data and percentages on the axis."""
    from matplotlib.ticker import MultipleLocator, PercentFormatter

    axis.set_major_formatter(PercentFormatter(xmax=1.0, decimals=0))
    axis.set_major_locator(MultipleLocator(0.2))


def per_task_figure(report: dict):
    """Per task, teacher vs distilled student: zero-shot and linear probe side by side as horizontal
    bars, each value written just past its bar, each task's chance level as a black tick across its
    two bars, the legend under the panels."""
    import numpy as np

    plt = _pyplot()
    tasks = list(report["teacher"]["tasks"])
    y = np.arange(len(tasks))
    chance = [report["teacher"]["tasks"][t]["chance"] for t in tasks]
    fig, axes = plt.subplots(1, 2, figsize=(12, 0.6 * len(tasks) + 2.4), sharey=True)
    for ax, (metric, title) in zip(axes, (("zero_shot", "zero-shot"), ("linear_probe", "linear probe"))):
        for offset, who, colour in ((-0.2, "teacher", TEACHER), (0.2, "student", STUDENT)):
            vals = [report[who]["tasks"][t].get(metric) or 0.0 for t in tasks]
            bars = ax.barh(y + offset, vals, 0.38, color=colour, label=who)
            for bar, v in zip(bars, vals):
                ax.text(v + 0.01, bar.get_y() + bar.get_height() / 2, f"{100 * v:.1f}", ha="left", va="center",
                        fontsize=8, zorder=4, bbox={"facecolor": "white", "edgecolor": "none", "pad": 0.6, "alpha": 0.85})
        for i, c in enumerate(chance):
            ax.plot([c, c], [i - 0.42, i + 0.42], color="black", linewidth=1.5, label="chance" if i == 0 else None)
        ax.set_xlim(0, 1.12)  # room for a value written past a full bar
        _percent_axis(ax.xaxis)
        ax.set_title(f"{title} accuracy")
        ax.set_xlabel("accuracy")
        ax.grid(axis="x", alpha=0.3)
    axes[0].set_yticks(y, tasks)
    axes[0].invert_yaxis()
    found = dict(zip(*reversed(axes[0].get_legend_handles_labels())))
    names = {"teacher": "teacher", "student": "distilled student", "chance": "chance"}
    fig.legend([found[k] for k in names], list(names.values()), loc="lower center", ncol=3, frameon=False)
    fig.suptitle("world suite per task: teacher vs distilled student")
    fig.tight_layout(rect=(0, 0.08, 1, 1))
    return fig


def plot_per_task(report: dict, path: Path) -> None:
    _save(per_task_figure(report), path, dpi=120)


def results_figure(result: dict):
    """One model's suite: per-task zero-shot and linear probe with chance; the zero-shot mean under
    each shift; retrieval recall. Legend under the panels."""
    import numpy as np

    plt = _pyplot()
    names = list(result["tasks"])
    rows = [result["tasks"][n] for n in names]
    panels = 1 + bool(result.get("robustness")) + bool(result.get("retrieval"))
    fig, axes = plt.subplots(1, panels, figsize=(5.5 + 4 * (panels - 1), 4.6), squeeze=False)
    ax = axes[0][0]
    x = np.arange(len(names))
    ax.bar(x - 0.2, [r["zero_shot"] for r in rows], 0.4, label="zero-shot")
    ax.bar(x + 0.2, [r.get("linear_probe") or 0 for r in rows], 0.4, label="linear probe")
    ax.scatter(x, [r["chance"] for r in rows], marker="_", s=300, color="k", label="chance", zorder=3)
    ax.set_xticks(x, names, rotation=30, ha="right")
    ax.set_title("classification")
    bars = [("zero-shot mean under shift", ["clean", *result.get("robustness", {})],
             [result["zero_shot_mean"], *result.get("robustness", {}).values()],
             ["tab:blue"] + ["tab:orange"] * len(result.get("robustness", {}))),
            ("retrieval", [k.replace("_to_", "->").replace("image", "img").replace("text", "txt")
                           for k in result.get("retrieval", {})], list(result.get("retrieval", {}).values()), "tab:green")]
    col = 1
    for title, labels, values, colour in bars:
        if len(values) <= (1 if title.startswith("zero-shot") else 0):
            continue
        axes[0][col].bar(labels, values, color=colour)
        axes[0][col].set_title(title)
        axes[0][col].tick_params(axis="x", rotation=30)
        col += 1
    for a in axes[0]:
        a.set_ylim(0, 1)
        _percent_axis(a.yaxis)
    axes[0][0].set_ylabel("accuracy")
    handles, labels = ax.get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=3, frameon=False)
    model = result.get("model") or {}
    fig.suptitle(f"{result['suite']} suite: {model.get('arch', 'in-memory model')}")
    fig.tight_layout(rect=(0, 0.07, 1, 1))
    return fig


def plot_results(result: dict, path: str | Path) -> None:
    _save(results_figure(result), path, dpi=110)


def _save(fig, path, *, dpi: int) -> None:
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=dpi)
    _pyplot().close(fig)
