"""Paired-data baselines of the quality table: the distilled students' architecture trained with the
CLIP contrastive loss on image-caption pairs, (a) at the distilled students' budget, (b) at the
teacher's."""

from __future__ import annotations

import json
import math
from pathlib import Path


def paired_student(recipe_args: list[str], out: Path, seed: int) -> tuple[str, None]:
    """The student trained with the CLIP loss on the corpus pictures, each with one true caption, for
    the distilled students' steps and batch (so it sees as many pairs as they see pictures), with
    their schedule, optimiser and precision. Returns the model folder."""
    import numpy as np
    import torch
    from open_clip.loss import ClipLoss
    from safetensors.torch import save_file

    from dimefm_pipeline.app.recipes import distill_config, load_recipe
    from dimefm_pipeline.core import models
    from dimefm_pipeline.core.optim import param_groups
    from dimefm_pipeline.distill.train import lr_at
    from dimefm_pipeline.world.hard.captions import caption
    from dimefm_pipeline.world.hard.corpus import IMAGE_STREAM
    from dimefm_pipeline.world.hard.render import render
    from dimefm_pipeline.world.hard.scene import sample_scene
    from dimefm_pipeline.world.scene import scene_rng

    recipe = load_recipe("world-demo", recipe_args)
    w, cfg = recipe.section("world"), distill_config(recipe)
    n, corpus_seed = w["images"], w.get("seed", 0)
    images, captions = [], []
    for i in range(n):  # the corpus pictures, drawn as `dimefm world images --world hard` draws them
        rng = scene_rng(corpus_seed, i, IMAGE_STREAM)
        scene = sample_scene(rng)
        images.append(render(scene))
        captions.append(caption(scene, rng))
    images = np.stack(images)
    model, _, tokenizer = models.create(cfg.student, seed=seed)
    mean = torch.tensor(model.visual.preprocess_cfg["mean"]).view(1, 3, 1, 1)
    std = torch.tensor(model.visual.preprocess_cfg["std"]).view(1, 3, 1, 1)
    opt = torch.optim.AdamW(param_groups(model, cfg.weight_decay), lr=cfg.lr)
    loss_fn, order = ClipLoss(), np.random.default_rng(seed).permutation(n)
    model.train()
    for step in range(cfg.steps):
        for g in opt.param_groups:
            g["lr"] = lr_at(step, cfg.steps, cfg)
        idx = np.take(order, range(step * cfg.batch_size, (step + 1) * cfg.batch_size), mode="wrap")
        x = (torch.from_numpy(images[idx]).permute(0, 3, 1, 2).float() / 255.0 - mean) / std
        with torch.autocast("cpu", dtype=torch.bfloat16):
            img_f, txt_f, scale = model(x, tokenizer([captions[i] for i in idx]))[:3]
        loss = loss_fn(img_f.float(), txt_f.float(), scale.float())
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip or 1.0)
        opt.step()
        with torch.no_grad():
            model.logit_scale.clamp_(0, math.log(100))
    out.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(out / f"{cfg.student}.safetensors"))
    (out / f"{cfg.student}.json").write_text(json.dumps(models.model_config(cfg.student)[1]))
    return str(out), None


def paired_teacher_budget(out: Path, seed: int) -> tuple[str, str]:
    """The student trained exactly as the hard-world teacher was (`dimefm world train-teacher --world
    hard --arch dimefm-world-student`): its stream of fresh pairs with edit groups, its schedule and
    steps. Returns (architecture, weights)."""
    from dimefm_pipeline.world.teacher import TeacherTrainConfig, train_teacher

    cfg = TeacherTrainConfig(world="hard", arch="dimefm-world-student", eval_every=0, threads=1, seed=seed)
    summary = train_teacher(cfg, out, progress=False, log=lambda *_: None)
    return "dimefm-world-student", summary["weights"]
