"""The quality table on the hard world: teacher, distilled students, ablations and paired baselines,
every row at several seeds, with bootstrap intervals (docs/results.md).

    .venv/bin/python benchmarks/world_quality.py --jobs 2                      # everything missing
    .venv/bin/python benchmarks/world_quality.py --only distilled vl_only --seeds 0 1 2
    .venv/bin/python benchmarks/world_quality.py --report-only                # rewrite docs/results.md

The world-demo recipe's corpora are built once (6,000 pictures, 8,000 sentences) and encoded by the
hard-world teacher, with the other caches a row needs (4 cached views, 1,000 pictures, filtered or
prompted sentences; a second hard-world teacher, trained when missing and added to the main cache).
Each (row, seed) is trained in its own process pinned to one core and evaluated on the full hard suite with per-picture correctness kept; its result is written to
OUT/results/ROW/seedS.json as soon as it is done, so a run cut off at any moment loses at most the
runs in flight, and a rerun trains only what is missing.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import sys
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from quality_report import write_report  # noqa: E402


@dataclass(frozen=True)
class Row:
    label: str
    overrides: dict = field(default_factory=dict)  # distill options on top of the world-demo recipe
    cache: str = "main"  # which cache it trains on (CACHES)
    kind: str = "distill"  # distill | teacher | paired | paired_teacher_budget
    max_seeds: int | None = None  # a row too costly for every seed runs the first ones only (the table says so)
    costly: bool = False  # about an hour on one core: runs after every other (row, seed)


ROWS = {
    "teacher": Row("hard-world teacher (shipped; paired CLIP training)", kind="teacher", max_seeds=1),
    "paired": Row("same student, CLIP loss on the corpus pictures with a true caption each "
                  "(as many pairs as the distilled student sees pictures)", kind="paired"),
    # 10,000 steps of the teacher's stream: about 16x a distilled row's compute
    "paired_teacher_budget": Row("same student, CLIP loss with the teacher's stream, recipe and budget",
                                 kind="paired_teacher_budget", max_seeds=1, costly=True),
    "vl_only": Row("DIME-FM, VL only", {"w_pvl": 0.0}),
    "distilled": Row("DIME-FM, VL + P-VL (both towers; the demo's loss)"),
    "udist": Row("DIME-FM, VL + P-VL + UDist", {"w_udist": 0.3}),
    "reference": Row("DIME-FM, teacher's text tower (reference mode)", {"text_tower": "teacher"}),
    # pseudo-pair mining's uses beyond the reference (the main cache is mined at k=8)
    "mined_share": Row("half of each batch's sentences are its pictures' mined neighbours", {"mined_share": 0.5}),
    "pvl_mined": Row("+ P-VL with mined pseudo captions (weight 0.3, mean of 4 neighbours)",
                     {"w_pvl_mined": 0.3, "pvl_mined_k": 4}),
    "views4": Row("cached views, K=4", cache="views4"),
    "aug": Row("on-the-fly augmentation (reference crops + flips), one un-augmented target", {"augment": "reference"}),
    "text_filtered": Row("sentences: the generic corpus filtered by the suite's vocabulary", cache="text_filtered"),
    "text_prompts": Row("sentences: the generic corpus + the suite's class-name prompts", cache="text_prompts"),
    "low": Row("low-data: 1,000 pictures", cache="low"),
    # batch size at the same pictures seen (128 x 600 = 76,800): the similarity rows span the batch
    "batch64": Row("batch 64 (1,200 steps)", {"batch_size": 64, "text_batch_size": 64, "steps": 1200}),
    "batch256": Row("batch 256 (300 steps)", {"batch_size": 256, "text_batch_size": 256, "steps": 300}),
    "batch512": Row("batch 512 (150 steps)", {"batch_size": 512, "text_batch_size": 512, "steps": 150}),
    "steps1200": Row("DIME-FM, VL + P-VL, 1,200 steps (twice the pictures seen)", {"steps": 1200}),
    # the demo's distillation at the teacher's steps and batch (10,000 x 128), on the same 6,000 pictures
    "distilled_teacher_budget": Row("DIME-FM, VL + P-VL, 10,000 steps (the teacher's steps and batch)",
                                    {"steps": 10000, "checkpoint_every": 500}, max_seeds=1, costly=True),
    # two teachers: the shipped one and a second hard-world teacher (another seed, 3,000 steps)
    "teacher_b": Row("second hard-world teacher (paired CLIP training, seed 1, 3,000 steps)", kind="teacher_b",
                     max_seeds=1),
    "from_b": Row("DIME-FM from the second teacher alone", {"teachers": "teacher-b"}, cache="ensemble"),
    "ensemble_mean": Row("DIME-FM from both teachers, mean of their KL terms",
                         {"teachers": "world-hard-teacher,teacher-b", "ensemble": "mean"}, cache="ensemble"),
    "ensemble_mixture": Row("DIME-FM from both teachers, KL to their mixed distributions",
                            {"teachers": "world-hard-teacher,teacher-b", "ensemble": "mixture"}, cache="ensemble"),
}
SECOND_TEACHER = {"world": "hard", "steps": 3000, "seed": 1}  # a different teacher of the same world
# name -> (recipe overrides, stages); the main cache is OUT itself, the others OUT/cache-NAME
TEXTS = "corpus/texts.txt"


def caches(out: Path) -> dict:
    def data(images: Path, texts: list[Path]) -> list[str]:
        return [f"data.images=['{images / 'corpus' / 'images' / '*.tar'}']",
                "data.texts=[" + ", ".join(f"'{t}'" for t in texts) + "]"]

    return {
        "views4": (data(out, [out / TEXTS]) + ["encode.views=4"], ("encode", "mine")),
        "low": (["world.images=1000"], ("world", "encode", "mine")),
        "text_filtered": (data(out, [out / "texts-filtered.txt"]), ("encode", "mine")),
        "text_prompts": (data(out, [out / TEXTS, out / "texts-prompts.txt"]), ("encode", "mine")),
    }


def suite_sentences(out: Path) -> None:
    """The generic corpus filtered by the suite's concept words, and the suite's class-name prompts."""
    from dimefm_pipeline.app.corpus import Vocabulary, filter_corpus
    from dimefm_pipeline.world.hard.suite import TASKS
    from dimefm_pipeline.world.hard.vocab import COLOUR_WORDS, COUNT_WORDS, PATTERN_WORDS, SHAPE_WORDS

    if not (out / "texts-prompts.txt").exists():
        lines = [t.format(c=c) for task in TASKS for c in task.classnames for t in task.templates]
        (out / "texts-prompts.txt").write_text("".join(line + "\n" for line in lines))
    if not (out / "texts-filtered.txt").exists():
        words = [list(w) for table in (SHAPE_WORDS, COLOUR_WORDS, PATTERN_WORDS) for w in table.values()]
        words += [[f"{c} objects" for c in COUNT_WORDS[n] if " " not in c] for n in COUNT_WORDS if n > 1]
        filter_corpus([str(out / TEXTS)], Vocabulary.from_classes(words), out / "texts-filtered.txt", progress=False)


def build_caches(out: Path, recipe_args: list[str], wanted: set[str]) -> None:
    from dimefm_pipeline.app.pipeline import run_recipe
    from dimefm_pipeline.app.recipes import load_recipe

    run_recipe(load_recipe("world-demo", recipe_args), only=("world", "encode", "mine"))
    if wanted & {"text_filtered", "text_prompts"}:
        suite_sentences(out)
    if wanted & {"ensemble", "teacher_b"}:
        from dimefm_pipeline.encode.teachers import AddTeacherConfig, add_teacher

        add_teacher(AddTeacherConfig(str(out / "manifest.duckdb"), "dimefm-world-teacher", str(second_teacher(out)),
                                     name="teacher-b"), progress=False)
    for name, (overrides, stages) in caches(out).items():
        if name in wanted:
            run_recipe(load_recipe("world-demo", [*recipe_args, *overrides, f"run.out={out / f'cache-{name}'}"]),
                       only=stages)


def second_teacher(out: Path) -> Path:
    """The second teacher's weights, trained first if missing (about 35 minutes on one core; resumable)."""
    from dimefm_pipeline.world.teacher import WEIGHTS_NAME, TeacherTrainConfig, train_teacher

    folder = out / "teacher-b"
    weights = folder / WEIGHTS_NAME[SECOND_TEACHER["world"]]
    if not weights.exists():
        train_teacher(TeacherTrainConfig(**SECOND_TEACHER), folder)
    return weights


_SUITE = None


def full_suite(quick: bool = False):
    """The full hard suite (`quick`: its small cut, for smoke runs), its pictures drawn once per
    process and kept."""
    global _SUITE
    if _SUITE is None:
        from dataclasses import replace

        from dimefm_pipeline.world.hard.suite import HardSuiteConfig, hard_suite

        suite, kept = hard_suite(HardSuiteConfig.quick() if quick else HardSuiteConfig()), {}

        def keep(images):
            def load():
                if images.key not in kept:
                    kept[images.key] = images.load()
                return kept[images.key]
            return replace(images, load=load)

        def relabel(s):
            return replace(s, images=keep(s.images))

        tasks = tuple(replace(t, train=relabel(t.train), val=relabel(t.val), test=relabel(t.test),
                              shifts={k: relabel(v) for k, v in t.shifts.items()}) for t in suite.tasks)
        _SUITE = replace(suite, tasks=tasks, retrieval=replace(suite.retrieval, images=keep(suite.retrieval.images)))
    return _SUITE


def _pin(counter) -> None:
    """Pin this pool worker to one core, so a job's torch threads never share it."""
    with counter.get_lock():
        core = counter.value % (os.cpu_count() or 1)
        counter.value += 1
    os.sched_setaffinity(0, {core})
    import torch

    torch.set_num_threads(1)


def run_one(job) -> tuple[str, int, dict]:
    """Train and evaluate one (row, seed); the result is written before it is returned."""
    from dimefm_pipeline.core import models
    from dimefm_pipeline.evaluation import evaluate

    name, seed, out, recipe_args, quick = job
    row, run_dir = ROWS[name], Path(out) / "runs" / f"{name}-seed{seed}"
    t0 = time.time()
    if row.kind == "teacher":
        model, weights = "world-hard", None
    elif row.kind == "teacher_b":
        model, weights = "dimefm-world-teacher", str(second_teacher(Path(out)))
    elif row.kind == "paired":
        from paired import paired_student

        model, weights = paired_student(recipe_args, run_dir, seed)
    elif row.kind == "paired_teacher_budget":
        from paired import paired_teacher_budget

        model, weights = paired_teacher_budget(run_dir, seed)
    else:
        model, weights = _distill(row, run_dir, seed, out, recipe_args), None
    train_seconds = time.time() - t0
    result = evaluate(models.load(model, weights, quiet=True), full_suite(quick), keep_correct=True, progress=False)
    result.update(train_seconds=round(train_seconds, 1), seed=seed, row=name)
    path = Path(out) / "results" / name / f"seed{seed}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(result))
    tmp.replace(path)
    return name, seed, result


def _distill(row: Row, run_dir: Path, seed: int, out: str, recipe_args: list[str]) -> str:
    from dimefm_pipeline.app.recipes import distill_config, load_recipe
    from dimefm_pipeline.distill.train import distill

    overrides = dict(row.overrides, seed=seed, workers=0)
    if row.cache not in ("main", "ensemble"):  # the second teacher is added to the main cache
        overrides["cache"] = str(Path(out) / f"cache-{row.cache}" / "manifest.duckdb")
    resume = any((run_dir / "checkpoints").glob("step_*.pt"))  # a run cut off earlier
    cfg = distill_config(load_recipe("world-demo", recipe_args), out=str(run_dir), resume=resume, **overrides)
    distill(cfg, progress=False)
    return cfg.out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="runs/quality-hard")
    p.add_argument("--steps", type=int, default=600, help="distillation steps per row (the demo's)")
    p.add_argument("--seeds", type=int, nargs="*", default=[0, 1, 2])
    p.add_argument("--jobs", type=int, default=1, help="(row, seed) runs at once, each pinned to one core")
    p.add_argument("--first-core", type=int, default=0, help="the core the first job is pinned to (the next ones follow)")
    p.add_argument("--only", nargs="*", default=None, help="rows to run (default: all)")
    p.add_argument("--all-seeds", action="store_true", help="run every seed of --seeds also for the rows that run "
                                                             "their first seed only by default (with --only)")
    p.add_argument("--results", default="docs/results.md")
    p.add_argument("--report-only", action="store_true", help="only rewrite the report from finished results")
    p.add_argument("--quick-suite", action="store_true", help="evaluate on the suite's small cut (smoke runs only)")
    p.add_argument("--set", nargs="*", default=[], help="extra world-demo recipe overrides (smoke runs)")
    a = p.parse_args()
    out = Path(a.out)
    # the table's rows are fixed here, whatever the demo's recipe is tuned to
    recipe_args = [f"run.out={out}", f"distill.steps={a.steps}", "encode.views=1", "distill.mined_share=0", *a.set]
    names = [n for n in ROWS if a.only is None or n in a.only]
    done = {(n, s) for n in ROWS for s in a.seeds if (out / "results" / n / f"seed{s}.json").exists()}
    seeds = {n: a.seeds if a.all_seeds else a.seeds[:ROWS[n].max_seeds] for n in names}
    jobs = [(n, s, str(out), recipe_args, a.quick_suite) for n in names for s in seeds[n] if (n, s) not in done]
    # every row's first seed before any row's second, the costly rows last: a run cut off early
    # still leaves a whole table
    jobs.sort(key=lambda j: (ROWS[j[0]].costly, j[1], list(ROWS).index(j[0])))
    failed = []
    if jobs and not a.report_only:
        build_caches(out, recipe_args, {ROWS[n].cache for n, *_ in jobs})
        counter = mp.get_context("spawn").Value("i", a.first_core)
        # spawn, not fork: a distill run starts torch.distributed and DataLoader machinery of its own
        with ProcessPoolExecutor(a.jobs, mp_context=mp.get_context("spawn"), initializer=_pin, initargs=(counter,)) as pool:
            futures = {pool.submit(run_one, job): job[:2] for job in jobs}
            for future in as_completed(futures):
                try:
                    name, seed, r = future.result()
                except Exception as exc:  # one failed run is reported; the others go on
                    failed.append(futures[future])
                    print(f"{futures[future]}: failed: {exc!r}", flush=True)
                    continue
                print(f"{name} seed {seed}: zero-shot {r['zero_shot_mean']:.4f} probe {r['linear_probe_mean']:.4f} "
                      f"robustness {r['robustness_mean']:.4f} (train {r['train_seconds']:.0f} s, eval {r['seconds']:.0f} s)",
                      flush=True)
    write_report(out, ROWS, Path(a.results), steps=a.steps)
    if failed:
        raise SystemExit(f"error: runs failed: {failed} (finished ones are kept; run again to retry)")


if __name__ == "__main__":
    main()
