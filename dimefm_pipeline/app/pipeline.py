"""`dimefm run RECIPE`: the stages of a recipe in data-flow order, each a library call.

world corpora (optional) -> encode images -> encode texts -> mine (optional) -> distill -> eval.
Each stage is idempotent where its library function is (encoding resumes, mining appends a new
mining), so a rerun of a finished recipe re-encodes nothing.
"""

from __future__ import annotations

import json
from pathlib import Path

from dimefm_pipeline.core.progress import make_console

from dimefm_pipeline.core.errors import DimefmError
from dimefm_pipeline.app.recipes import Recipe, distill_config

console = make_console()
STAGES = ("world", "encode", "mine", "distill", "eval")


def world_corpora(recipe: Recipe) -> tuple[list[str], list[str]]:
    """Generate the built-in world's unpaired corpora as the recipe's [world] section asks
    (once: a finished corpus is reused by a rerun)."""
    from dimefm_pipeline.core.progress import progress_bar
    from dimefm_pipeline.world.corpus import ImageCorpusConfig, TextCorpusConfig, write_images, write_texts

    w = recipe.section("world")
    root = recipe.out / "corpus"
    kind = w.get("kind", "easy")
    img_cfg = ImageCorpusConfig(n=w.get("images", 4000), fmt=w.get("image_format", "webdataset"), seed=w.get("seed", 0),
                                per_shard=w.get("per_shard", 1000), world=kind)
    txt_fmt = w.get("text_format", "txt")
    txt_cfg = TextCorpusConfig(n=w.get("texts", 6000), fmt=txt_fmt, seed=w.get("seed", 0) + 1,
                               distractor_share=w.get("distractor_share", 0.3), world=kind)
    images, texts, done = root / "images", root / f"texts.{txt_fmt}", root / ".complete"
    wanted = repr((img_cfg, txt_cfg))
    if not (done.exists() and done.read_text() == wanted):
        if root.exists():
            import shutil

            shutil.rmtree(root)  # a corpus of other settings, or an interrupted one: regenerate it whole
        with progress_bar() as bar:
            task = bar.add_task("world corpora", total=img_cfg.n + txt_cfg.n, items=0, rate=0.0)
            write_images(images, img_cfg, on_progress=lambda k: bar.advance(task, k))
            write_texts(texts, txt_cfg, on_progress=lambda k: bar.advance(task, k))
        done.write_text(wanted)
    image_source = str(images / "*.tar") if img_cfg.fmt == "webdataset" else str(images)
    return [image_source], [str(texts)]


def encode_stage(recipe: Recipe, images: list[str], texts: list[str]) -> list:
    from dimefm_pipeline.encode.config import EncodeConfig
    from dimefm_pipeline.encode.run import encode
    from dimefm_pipeline.app.summaries import print_encode_summary

    enc = recipe.section("encode") or {}
    data = recipe.section("data") or {}
    summaries = []
    for modality, sources, opts in (("image", images, data.get("image_options", {})), ("text", texts, data.get("text_options", {}))):
        if not sources:
            continue
        cfg = EncodeConfig.from_dict(modality, sources, str(recipe.cache), {**enc, "source_options": opts})
        s = encode(cfg, command=f"dimefm run {recipe.path}")
        if s is not None:
            print_encode_summary(cfg, s)
            summaries.append(s)
    return summaries


def mine_stage(recipe: Recipe):
    from dimefm_pipeline.mine.config import MineConfig
    from dimefm_pipeline.mine.run import mine_cache

    cfg = MineConfig.from_dict({"cache": str(recipe.cache), **recipe.section("mine")})
    return mine_cache(cfg, command=f"dimefm run {recipe.path}")


def distill_stage(recipe: Recipe):
    from dimefm_pipeline.app.summaries import print_distill_result
    from dimefm_pipeline.distill.train import distill

    result = distill(distill_config(recipe), command=f"dimefm run {recipe.path}")
    if result is not None:
        print_distill_result(result)
    return result


def eval_stage(recipe: Recipe, student_dir: Path) -> dict:
    from dimefm_pipeline.app.summaries import results_table
    from dimefm_pipeline.core import models
    from dimefm_pipeline.evaluation import evaluate
    from dimefm_pipeline.world.suite import resolve_suite

    ev = recipe.section("eval") or {}
    result = evaluate(models.load(str(student_dir), quiet=True), resolve_suite(ev.get("suite", "world")))
    console.print(results_table(result))
    (recipe.out / "eval.json").write_text(json.dumps(result, indent=2))
    return result


def run_recipe(recipe: Recipe, *, only: tuple[str, ...] = ()) -> dict:
    """Run the recipe's stages (all present ones, or just `only`)."""
    bad = set(only) - set(STAGES)
    if bad:
        raise DimefmError(f"unknown stage(s) {', '.join(sorted(bad))}; stages: {', '.join(STAGES)}")
    wanted = lambda s: (not only or s in only) and (s in ("encode", "distill") or recipe.section(s) is not None)  # noqa: E731
    recipe.out.mkdir(parents=True, exist_ok=True)
    data = recipe.section("data") or {}
    images, texts = list(data.get("images", [])), list(data.get("texts", []))
    done: dict = {}
    if wanted("world"):
        console.rule("world corpora")
        images, texts = world_corpora(recipe)
    if wanted("encode"):
        console.rule("stage one: encode")
        if not images and not texts:
            raise DimefmError(f"{recipe.path}: [data] names no images or texts (and there is no [world] section)")
        done["encode"] = encode_stage(recipe, images, texts)
    if wanted("mine"):
        console.rule("pseudo-pair mining")
        done["mine"] = mine_stage(recipe)
    if wanted("distill"):
        console.rule("stage two: distill")
        done["distill"] = distill_stage(recipe)
    if wanted("eval"):
        console.rule("evaluation")
        done["eval"] = eval_stage(recipe, Path(distill_config(recipe).out))
    return done
