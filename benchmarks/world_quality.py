"""The world quality table: teacher, distilled students, ablations and a paired-data baseline.

One command builds the world-demo cache once (corpora, encode, mine), trains every variant with the
same student, steps and batch, trains the same student with the CLIP contrastive loss on the SAME
corpus images paired with their true captions, evaluates everything on the full world suite and
writes `docs/results.md` (plus JSON and a PNG under --out).

    .venv/bin/python benchmarks/world_quality.py --steps 1500 --jobs 2 --notes benchmarks/world_quality_notes.md
    .venv/bin/python benchmarks/world_quality.py --steps 300 --jobs 2 --out runs/quality-300 \
        --results docs/results-300-steps.md                                # the short-budget table

Finished variants are kept in OUT/results.json, so a rerun only trains what is missing and rewrites
the Markdown; `--only` picks variants. A 1,500-step variant takes 13-30 minutes of a 2-core CPU with
two trained at once (`--jobs 2`), so the whole table is an afternoon.
"""

from __future__ import annotations

import argparse
import json
import math
import multiprocessing as mp
import os
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path

VARIANTS = {
    # name: (description, distill overrides[, cache: another cache than the main one, see CACHES])
    "distilled": ("DIME-FM, both towers (VL + P-VL)", {}),
    "reference": ("DIME-FM, teacher's text tower (reference mode)", {"text_tower": "teacher"}),
    "vl_only": ("ablation: VL only", {"w_pvl": 0.0}),
    "udist": ("ablation: VL + P-VL + UDist", {"w_udist": 0.3}),
    "mined_batches": ("ablation: + mined batches (50% of sentences)", {"mined_share": 0.5}),
    "mined_filter": ("ablation: + mined text filter", {"text_filter": "mined"}),
    "mined_pvl": ("ablation: + P-VL with mined captions", {"w_pvl_mined": 0.3}),
    # augmentation and cached views (6,000 images, and a low-data regime of 1,000)
    "aug_reference": ("augmented on the fly (reference crops + flips), one un-augmented target", {"augment": "reference"}),
    "views4": ("cached views, K=4 (reference crops + flips, replayed)", {}, "views4"),
    "views8": ("cached views, K=8", {}, "views8"),
    "low_none": ("1,000 images: no augmentation", {}, "low"),
    "low_reference": ("1,000 images: augmented on the fly, one un-augmented target", {"augment": "reference"}, "low"),
    "low_views4": ("1,000 images: cached views, K=4", {}, "low_views4"),
    "low_views8": ("1,000 images: cached views, K=8", {}, "low_views8"),
    # the sentence side (the same images)
    "text_filtered": ("sentences: the generic corpus filtered by the suite's vocabulary", {}, "text_filtered"),
    "text_prompts": ("sentences: prompts of the suite's class names only", {}, "text_prompts"),
    "text_both": ("sentences: filtered corpus + class-name prompts", {}, "text_both"),
    # run-to-run spread: the same students with other seeds (student initialisation, epoch order, view draws)
    "distilled_seed1": ("DIME-FM, both towers, seed 1", {"seed": 1}),
    "distilled_seed2": ("DIME-FM, both towers, seed 2", {"seed": 2}),
    "text_filtered_seed1": ("sentences: filtered corpus, seed 1", {"seed": 1}, "text_filtered"),
    "low_none_seed1": ("1,000 images: no augmentation, seed 1", {"seed": 1}, "low"),
    "low_views4_seed1": ("1,000 images: cached views, K=4, seed 1", {"seed": 1}, "low_views4"),
}
GROUPS = {
    "views": ("Augmentation and cached views", ["distilled", "aug_reference", "views4", "views8", "low_none", "low_reference",
                                                "low_views4", "low_views8"]),
    "corpus": ("The sentence corpus", ["distilled", "text_filtered", "text_prompts", "text_both"]),
    "seeds": ("Run-to-run spread (every other row is seed 0)", ["distilled", "distilled_seed1", "distilled_seed2", "text_filtered",
                                                               "text_filtered_seed1", "low_none", "low_none_seed1", "low_views4",
                                                               "low_views4_seed1"]),
}


def cache_recipes(out: Path, base: list[str]) -> dict:
    """name -> (recipe overrides, stages to run) of every other cache, in build order (a cache may reuse an
    earlier one's corpus). The main cache is `out` itself."""
    def data(images: Path, texts: list[Path]):
        return [f"data.images=['{images / 'corpus' / 'images' / '*.tar'}']", "data.texts=[" + ", ".join(f"'{t}'" for t in texts) + "]"]

    main_texts = out / "corpus" / "texts.txt"
    low = out / "cache-low"
    return {
        "views4": (data(out, [main_texts]) + ["encode.views=4"], ("encode", "mine")),
        "views8": (data(out, [main_texts]) + ["encode.views=8"], ("encode", "mine")),
        "low": (["world.images=1000"], ("world", "encode", "mine")),
        "low_views4": (data(low, [low / "corpus" / "texts.txt"]) + ["encode.views=4"], ("encode", "mine")),
        "low_views8": (data(low, [low / "corpus" / "texts.txt"]) + ["encode.views=8"], ("encode", "mine")),
        "text_filtered": (data(out, [out / "texts-filtered.txt"]), ("encode", "mine")),
        "text_prompts": (data(out, [out / "texts-prompts.txt"]), ("encode", "mine")),
        "text_both": (data(out, [out / "texts-filtered.txt", out / "texts-prompts.txt"]), ("encode", "mine")),
    }


def suite_sentences(out: Path) -> None:
    """The world suite's vocabulary filter of the generic corpus, and its class-name prompts (once)."""
    from dimefm_pipeline.app.corpus import Vocabulary, filter_corpus, write_prompts
    from dimefm_pipeline.world.suite import _task_specs

    specs = list(_task_specs())
    if not (out / "texts-prompts.txt").exists():
        parts = []
        for name, _, classnames, templates, _ in specs:
            path = out / f"texts-prompts-{name}.txt"
            path.unlink(missing_ok=True)
            write_prompts([[c] for c in classnames], list(templates), path)
            parts.append(path.read_text())
            path.unlink()
        (out / "texts-prompts.txt").write_text("".join(parts))
    if not (out / "texts-filtered.txt").exists():
        vocab = Vocabulary.from_classes([[c] for _, _, classnames, _, _ in specs for c in classnames])
        filter_corpus([str(out / "corpus" / "texts.txt")], vocab, out / "texts-filtered.txt", progress=False)


def _train_and_eval(args):
    """One pool job: a distilled variant, or the paired baseline."""
    import torch

    name, overrides, recipe_args, out, threads = args
    torch.set_num_threads(threads)  # a distill run sets its own (cores beside its loader workers)
    if name == "teacher":
        from dimefm_pipeline.core.models import load as load_eval_model
        from dimefm_pipeline.evaluation import evaluate
        from dimefm_pipeline.world.suite import world_suite

        return name, evaluate(load_eval_model("world", quiet=True), world_suite(), progress=False)
    if name == "paired_baseline":
        from dimefm_pipeline.app.recipes import load_recipe

        recipe = load_recipe("world-demo", recipe_args)
        d = recipe.section("distill")
        return name, paired_baseline(recipe, Path(out) / name, d["steps"], d["batch_size"])
    if name == "paired_teacher_budget":
        return name, paired_teacher_budget(Path(out) / name, threads)
    from dimefm_pipeline.distill.train import distill
    from dimefm_pipeline.core.models import load as load_eval_model
    from dimefm_pipeline.evaluation import evaluate
    from dimefm_pipeline.world.suite import world_suite
    from dimefm_pipeline.app.recipes import distill_config, load_recipe

    recipe = load_recipe("world-demo", recipe_args)
    resume = any((Path(out) / name / "checkpoints").glob("step_*.pt"))  # an interrupted earlier try
    cache = VARIANTS[name][2] if len(VARIANTS[name]) > 2 else None
    if cache is not None:
        overrides = {**overrides, "cache": str(Path(out) / f"cache-{cache}" / "manifest.duckdb")}
    cfg = distill_config(recipe, out=str(Path(out) / name), resume=resume, **overrides)
    t0 = time.time()
    distill(cfg, progress=False)
    seconds = time.time() - t0
    result = evaluate(load_eval_model(cfg.out, quiet=True), world_suite(), progress=False)
    result["train_seconds"] = round(seconds, 1)
    (Path(cfg.out) / "eval.json").write_text(json.dumps(result, indent=2))
    return name, result


def paired_baseline(recipe, out: Path, steps: int, batch: int) -> dict:
    """The student trained with the CLIP loss on the corpus images and their true captions."""
    import numpy as np
    import open_clip
    import torch
    from open_clip.loss import ClipLoss

    from dimefm_pipeline.distill.config import DistillConfig
    from dimefm_pipeline.core.optim import param_groups
    from dimefm_pipeline.distill.train import lr_at
    from dimefm_pipeline.core.models import load as load_eval_model
    from dimefm_pipeline.evaluation import evaluate
    from dimefm_pipeline.world.suite import world_suite
    from dimefm_pipeline.core.models import register_configs
    from dimefm_pipeline.world.captions import caption
    from dimefm_pipeline.world.corpus import IMAGE_STREAM
    from dimefm_pipeline.world.render import render
    from dimefm_pipeline.world.scene import sample_scene, scene_rng

    w = recipe.section("world")
    d = recipe.section("distill")
    n, seed = w["images"], w.get("seed", 0)
    register_configs()
    torch.manual_seed(0)
    arch = d["student"]
    model, _, _ = open_clip.create_model_and_transforms(arch)
    tok = open_clip.get_tokenizer(arch)
    # the same pixels as the unpaired corpus (corpus_image), each with one true caption
    images, caps = [], []
    for i in range(n):
        rng = scene_rng(seed, i, IMAGE_STREAM)
        scene = sample_scene(rng, size=64)
        images.append(render(scene))
        caps.append(caption(scene, rng))
    images = np.stack(images)
    mean = torch.tensor(model.visual.preprocess_cfg["mean"]).view(1, 3, 1, 1)
    std = torch.tensor(model.visual.preprocess_cfg["std"]).view(1, 3, 1, 1)
    cfg = DistillConfig(cache="-", out=str(out), steps=steps, lr=d.get("lr", 8e-4), min_lr=d.get("min_lr", 4e-5),
                        warmup_lr=d.get("warmup_lr", 4e-6), warmup=d.get("warmup", 0.04))
    opt = torch.optim.AdamW(param_groups(model, 0.05), lr=cfg.lr, fused=True)
    loss_fn = ClipLoss()
    model.train()
    order = np.random.default_rng(0).permutation(n)
    t0 = time.time()
    for step in range(steps):
        for g in opt.param_groups:
            g["lr"] = lr_at(step, steps, cfg)
        start = (step * batch) % n
        idx = np.take(order, range(start, start + batch), mode="wrap")
        x = (torch.from_numpy(images[idx]).permute(0, 3, 1, 2).float() / 255.0 - mean) / std
        with torch.autocast("cpu", dtype=torch.bfloat16):
            img_f, txt_f, scale = model(x, tok([caps[i] for i in idx]))[:3]
        loss = loss_fn(img_f.float(), txt_f.float(), scale.float())
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        with torch.no_grad():
            model.logit_scale.clamp_(0, math.log(100))
    seconds = time.time() - t0
    out.mkdir(parents=True, exist_ok=True)
    from safetensors.torch import save_file

    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(out / f"{arch}.safetensors"))
    (out / f"{arch}.json").write_text(json.dumps(open_clip.get_model_config(arch)))
    result = evaluate(load_eval_model(str(out), quiet=True), world_suite(), progress=False)
    result["train_seconds"] = round(seconds, 1)
    return result


def paired_teacher_budget(out: Path, threads: int) -> dict:
    """The student trained exactly as the shipped teacher was: the CLIP loss on the teacher's own paired
    stream (fresh scenes, edit groups as hard negatives), its schedule, 3,000 steps of 128 pairs: as
    many pair-samples (384,000) as the teacher saw. The fair paired baseline."""
    from dataclasses import replace

    from dimefm_pipeline.core.models import load as load_eval_model
    from dimefm_pipeline.evaluation import evaluate
    from dimefm_pipeline.world.suite import world_suite
    from dimefm_pipeline.world.teacher import TeacherTrainConfig, train_teacher

    cfg = replace(TeacherTrainConfig(), arch="dimefm-world-student", eval_every=0, threads=threads)
    t0 = time.time()
    weights = train_teacher(cfg, out, progress=False, log=lambda *a: None)["weights"]
    seconds = time.time() - t0
    result = evaluate(load_eval_model("dimefm-world-student", weights, quiet=True), world_suite(), progress=False)
    result["train_seconds"] = round(seconds, 1)
    return result


MAIN = ["distilled", "reference", "vl_only", "udist", "mined_batches", "mined_filter", "mined_pvl"]
ROWS = [("teacher", "world teacher (paired CLIP training, shipped)")] + [(k, VARIANTS[k][0]) for k in MAIN] + [
    ("paired_baseline", "baseline: same student, CLIP loss on the same images with true captions (6,000 pairs, same steps)"),
    ("paired_teacher_budget", "baseline: same student, CLIP loss with the teacher's data, recipe and budget (384,000 pairs)")]


LABELS = {k: v[0] for k, v in VARIANTS.items()}
GROUP_TABLES = [(GROUPS[g][0], GROUPS[g][1]) for g in GROUPS]


def all_keys(results: dict) -> list[str]:
    """Every measured model once: the main table's order, then the groups' rows."""
    keys = [k for k, _ in ROWS] + [k for _, rows in GROUP_TABLES for k in rows]
    return [k for k in dict.fromkeys(keys) if k in results]


def write_results(results: dict, path: Path, command: str, png: Path, setup: str, notes: str = "") -> None:
    t = results["teacher"]

    def pct(v):
        return "-" if v is None else f"{100 * v:.1f}"

    def ratio(v, ref):
        return "-" if v is None or not ref else f"{v / ref:.3f}"

    def r1(r, direction):
        return r.get("retrieval", {}).get(f"{direction}_R@1")

    lines = ["# Quality on the world suite", "",
             f"Produced by `{command}` on CPU. {setup}",
             "Accuracies in %, on the full world suite (1,000 test images per pool, four shifted copies, 500 "
             "retrieval images); ratios are model / teacher. Robustness: mean zero-shot accuracy over the "
             "shifted test sets of every task.", "",
             "| model | zero-shot | linear probe | robustness | R@1 i2t | R@1 t2i | ZS ratio | LP ratio | robust ratio | train s |",
             "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    present = [(key, label, results[key]) for key, label in ROWS if key in results]
    for key, label, r in present:
        lines.append(f"| {label} | {pct(r['zero_shot_mean'])} | {pct(r['linear_probe_mean'])} | {pct(r['robustness_mean'])} | "
                     f"{pct(r1(r, 'image_to_text'))} | {pct(r1(r, 'text_to_image'))} | "
                     f"{ratio(r['zero_shot_mean'], t['zero_shot_mean'])} | "
                     f"{ratio(r['linear_probe_mean'], t['linear_probe_mean'])} | {ratio(r['robustness_mean'], t['robustness_mean'])} | "
                     f"{r.get('train_seconds', '-')} |")
    d, base = results.get("distilled"), results.get("paired_baseline")
    if d is not None:
        seeds = [d] + [results[k] for k in results if k.startswith("distilled_seed")]
        lines += ["", "Goals for the distilled student (both towers):", "",
                  "| goal | measured (seed 0) | met |" + (f" mean of {len(seeds)} seeds | met |" if len(seeds) > 1 else ""),
                  "| --- | ---: | --- |" + (" ---: | --- |" if len(seeds) > 1 else "")]
        for metric, label, goal in (("zero_shot_mean", "zero-shot / teacher >= 0.95", 0.95),
                                    ("linear_probe_mean", "linear probe / teacher >= 0.97", 0.97),
                                    ("robustness_mean", "robustness / teacher >= 0.90", 0.90)):
            ratios = [d[metric] / t[metric], sum(r[metric] for r in seeds) / len(seeds) / t[metric]][:1 + (len(seeds) > 1)]
            lines.append(f"| {label} | " + " | ".join(f"{v:.3f} | {'yes' if v >= goal else f'no ({v - goal:+.3f})'}" for v in ratios) + " |")
        if base is not None:
            for metric, label in (("zero_shot_mean", "zero-shot"), ("linear_probe_mean", "linear probe"),
                                  ("robustness_mean", "robustness")):
                gap = 100 * (d[metric] - base[metric])
                lines.append(f"| {label} at least the paired baseline's | {gap:+.1f} points | {'yes' if gap >= 0 else 'no'} |")
    for title, keys in GROUP_TABLES:
        rows = [k for k in keys if k in results]
        if len(rows) < 2:
            continue
        lines += ["", f"{title}:", "", "| model | zero-shot | linear probe | robustness | R@1 i2t | R@1 t2i | train s |",
                  "| --- | ---: | ---: | ---: | ---: | ---: | ---: |"]
        for key in rows:
            r = results[key]
            lines.append(f"| {LABELS[key]} | {pct(r['zero_shot_mean'])} | {pct(r['linear_probe_mean'])} | {pct(r['robustness_mean'])} | "
                         f"{pct(r1(r, 'image_to_text'))} | {pct(r1(r, 'text_to_image'))} | {r.get('train_seconds', '-')} |")
    every = all_keys(results)
    for title, field in (("Per-task zero-shot accuracy (%):", "zero_shot"), ("Per-task linear-probe accuracy (%):", "linear_probe")):
        lines += ["", title, "", "| model | " + " | ".join(t["tasks"]) + " |",
                  "| --- | " + " | ".join("---:" for _ in t["tasks"]) + " |"]
        for key in every:
            lines.append(f"| {key} | " + " | ".join(pct(results[key]["tasks"][k].get(field)) for k in t["tasks"]) + " |")
    shifts = list(t.get("robustness", {}))
    if shifts:
        lines += ["", "Robustness per shift (mean zero-shot accuracy over tasks, %):", "",
                  "| model | " + " | ".join(shifts) + " |", "| --- | " + " | ".join("---:" for _ in shifts) + " |"]
        for key in every:
            lines.append(f"| {key} | " + " | ".join(pct(results[key].get("robustness", {}).get(sh)) for sh in shifts) + " |")
    lines += ["", f"![per-model means]({png.name})", ""]
    if notes:
        lines += [notes.rstrip(), ""]
    path.write_text("\n".join(lines))


def plot(results: dict, png: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    keys = all_keys(results)
    x = np.arange(len(keys))
    fig, ax = plt.subplots(figsize=(max(11, 0.8 * len(keys) + 2), 4.5))
    for i, (m, label) in enumerate((("zero_shot_mean", "zero-shot"), ("linear_probe_mean", "linear probe"), ("robustness_mean", "robustness"))):
        ax.bar(x + (i - 1) * 0.27, [results[k][m] or 0 for k in keys], 0.27, label=label)
    ax.set_xticks(x, keys, rotation=25, ha="right")
    ax.set_ylim(0.4, 1.02)  # every mean measured so far is above 0.45; the differences that matter are near the top
    ax.set_ylabel("mean accuracy (axis from 0.4)")
    ax.grid(axis="y", alpha=0.3)
    ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0))
    ax.set_title("world suite: teacher, distilled students, augmentation, sentence corpora, paired baselines")
    fig.tight_layout()
    fig.savefig(png, dpi=120)
    plt.close(fig)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="runs/quality")
    p.add_argument("--steps", type=int, default=1500)
    p.add_argument("--jobs", type=int, default=1, help="variants trained at once (each with its own process)")
    p.add_argument("--only", nargs="*", default=None, help="subset of variants")
    p.add_argument("--results", default="docs/results.md")
    p.add_argument("--set", nargs="*", default=[], help="extra world-demo recipe overrides")
    p.add_argument("--notes", default=None, help="Markdown appended to the results (the reading of docs/results.md "
                                                 "is benchmarks/world_quality_notes.md)")
    a = p.parse_args()
    from rich.console import Console

    from dimefm_pipeline.app.pipeline import run_recipe
    from dimefm_pipeline.app.recipes import load_recipe

    console = Console()
    out = Path(a.out)
    recipe_args = [f"run.out={out}", f"distill.steps={a.steps}", "encode.views=1", *a.set]  # the main cache: no views
    recipe = load_recipe("world-demo", recipe_args)
    t0 = time.time()
    run_recipe(recipe, only=("world", "encode", "mine"))
    wanted = [n for n in VARIANTS if a.only is None or n in a.only]
    needed = {VARIANTS[n][2] for n in wanted if len(VARIANTS[n]) > 2}
    if needed & {"text_filtered", "text_prompts", "text_both"}:
        suite_sentences(out)
    for cache, (overrides, stages) in cache_recipes(out, recipe_args).items():
        if cache in needed or any(cache == "low" and c.startswith("low_views") for c in needed):
            run_recipe(load_recipe("world-demo", [*recipe_args, *overrides, f"run.out={out / f'cache-{cache}'}"]), only=stages)
    results_path = out / "results.json"
    results = json.loads(results_path.read_text()) if results_path.exists() else {}
    names = [n for n in [*VARIANTS, "paired_baseline", "paired_teacher_budget", "teacher"]
             if (a.only is None or n in a.only) and n not in results]
    threads = max(1, (os.cpu_count() or 1) // a.jobs)
    jobs = [(n, VARIANTS.get(n, ("", {}))[1], recipe_args, str(out), threads) for n in names]
    # Not multiprocessing.Pool: its workers are daemons, and a distill run starts DataLoader workers.
    failed = []
    with ProcessPoolExecutor(a.jobs, mp_context=mp.get_context("spawn")) as pool:
        futures = {pool.submit(_train_and_eval, job): job[0] for job in jobs}
        for future in as_completed(futures):
            try:  # one failed variant is reported at once; the others go on
                name, result = future.result()
            except Exception:
                failed.append(futures[future])
                console.print(f"{futures[future]}: failed", highlight=False)
                console.print_exception()
                continue
            results[name] = result
            results_path.write_text(json.dumps(results, indent=2))
            console.print(f"{name}: zero-shot {result['zero_shot_mean']:.3f} linear probe {result['linear_probe_mean']:.3f} "
                          f"robustness {result['robustness_mean']:.3f} ({result.get('train_seconds', '-')} s)")
    if failed:
        raise SystemExit(f"error: variants failed: {', '.join(failed)} (the others are in {results_path}; run again to retry)")
    png = Path(a.results).with_suffix(".png")
    plot(results, png)
    opts = [("steps", a.steps), ("jobs", a.jobs)] + [(k, v) for k, v, default in (
        ("out", a.out, "runs/quality"), ("results", a.results, "docs/results.md"), ("notes", a.notes, None)) if v != default]
    cmd = "python benchmarks/world_quality.py " + " ".join(f"--{k} {v}" for k, v in opts)
    w, d = recipe.section("world"), recipe.section("distill")
    setup = (f"Every student: `{d['student']}`, {a.steps} steps of {d['batch_size']} images + {d['text_batch_size']} "
             f"sentences, lr {d['lr']}, the `world-demo` cache ({w['images']:,} images; {w['texts']:,} sentences, "
             f"{100 * w['distractor_share']:.0f}% of them non-visual distractors; images and sentences unpaired). "
             f"The first paired baseline trains the same student with the CLIP loss on the same {w['images']:,} images, "
             "each with one true caption, for the same steps and batch: the distilled students' budget, but far "
             "fewer paired samples than the teacher saw. The second trains it exactly as the teacher was trained "
             "(`dimefm world train-teacher --arch dimefm-world-student`: 3,000 steps of 128 fresh pairs with edit "
             "groups, 384,000 pair-samples, lr 5e-4): as much paired data as the teacher, and more steps than the "
             "distilled students.")
    notes = Path(a.notes).read_text() if a.notes else ""
    write_results(results, Path(a.results), cmd, png, setup, notes)
    console.print(f"wrote {a.results} and {png} in {time.time() - t0:.0f} s")


if __name__ == "__main__":
    main()
