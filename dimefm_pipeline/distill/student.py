"""Build the student: any open_clip architecture with the teacher's embedding dim; save it so that
open_clip alone can load it."""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass
from pathlib import Path

from dimefm_pipeline.core import models
from dimefm_pipeline.core.errors import DimefmError
from dimefm_pipeline.core.weights import load_state_dict

WORLD_STUDENT = "dimefm-world-student"
TEXT_PREFIXES = ("token_embedding", "positional_embedding", "transformer.", "ln_final", "text_projection", "text.")


@dataclass
class Student:
    model: object  # open_clip CLIP in train mode
    arch: str  # name its output config is registered under
    config: dict  # open_clip model config of the output
    tokenizer: object | None  # None when the teacher's text tower is kept (no text forward needed)
    image_size: int
    mean: tuple
    std: tuple


def is_text_param(name: str) -> bool:
    return name.startswith(TEXT_PREFIXES) or name in ("attn_mask",)


def student_config(student: str | None, teacher, text_tower: str) -> tuple[str, dict]:
    """The student's open_clip config: its own, or with the teacher's text tower in reference mode."""
    if student is None:
        if teacher.arch != models.WORLD_ARCH:
            raise DimefmError("--student is required (an open_clip name or a model-config .json)")
        student = WORLD_STUDENT
    arch, cfg = models.model_config(student)
    if int(cfg.get("embed_dim", -1)) != teacher.embed_dim:
        raise DimefmError(
            f"student {arch} has embed_dim {cfg.get('embed_dim')} but the teacher's embeddings are {teacher.embed_dim}-d: "
            f"use a student config with \"embed_dim\": {teacher.embed_dim}"
        )
    if text_tower == "teacher":
        cfg["text_cfg"] = copy.deepcopy(teacher.config["text_cfg"])
        for key in ("quick_gelu", "custom_text"):
            if key in teacher.config:
                cfg[key] = teacher.config[key]
    return arch, cfg


def build_student(cfg, teacher, *, device="cpu") -> Student:
    """Create the student (random init, `--init` weights, teacher text tower in reference mode)."""
    import open_clip

    arch, model_cfg = student_config(cfg.student, teacher, cfg.text_tower)
    name = cfg.name or (f"dimefm-{arch}" if not arch.startswith("dimefm-") else arch + "-distilled")
    if cfg.text_tower == "teacher":
        name += "-teacher-text"
    models.register_config(name, model_cfg)
    model, _, tokenizer = models.create(name, seed=cfg.seed)
    if cfg.init:
        missing, unexpected = model.load_state_dict(load_state_dict(cfg.init), strict=False)
        if unexpected or (missing and cfg.text_tower == "student"):
            raise DimefmError(f"--init {cfg.init} does not fit {name}: missing {missing[:5]}, unexpected {unexpected[:5]}")
    if cfg.text_tower == "teacher":
        _load_teacher_text_tower(model, teacher)
    # The similarity scale is fixed (s = 100) in the losses: the model's own scale is never trained.
    for pname, p in model.named_parameters():
        if pname.startswith("logit_") or (cfg.text_tower == "teacher" and is_text_param(pname)):
            p.requires_grad_(False)
    model.to(device).train()
    pp = getattr(model.visual, "preprocess_cfg", {}) or {}
    return Student(model, name, model_cfg, tokenizer if cfg.text_tower == "student" else None, models.image_size(model_cfg),
                   tuple(pp.get("mean", open_clip.OPENAI_DATASET_MEAN)), tuple(pp.get("std", open_clip.OPENAI_DATASET_STD)))


def _load_teacher_text_tower(model, teacher) -> None:
    """Copy the teacher's text tower weights (fingerprint-checked against the manifest)."""
    spec = models.resolve_spec(teacher.arch, teacher.pretrained, config=teacher.config)
    loaded = models.build(spec, quiet=True)
    if loaded.fingerprint != teacher.fingerprint:
        raise DimefmError(
            f"teacher weights {teacher.pretrained} no longer match the cache (sha256 {loaded.fingerprint[:12]} vs "
            f"{teacher.fingerprint[:12]}): cannot keep the teacher's text tower"
        )
    text_state = {k: v for k, v in loaded.model.state_dict().items() if is_text_param(k)}
    missing, unexpected = model.load_state_dict(text_state, strict=False)
    if unexpected:
        raise DimefmError(f"teacher text tower does not fit the student: {unexpected[:5]}")


HUB_CONFIG, HUB_WEIGHTS = "open_clip_config.json", "open_clip_model.safetensors"


def save_student(student: Student, out: Path, *, logit_scale: float | None, about: dict | None = None) -> tuple[Path, Path]:
    """Write `out` as an open_clip hub model folder: `open_clip_config.json` (`model_cfg`,
    `preprocess_cfg`) and `open_clip_model.safetensors`, so that
    `open_clip.create_model_and_transforms("local-dir:OUT")` loads it without dimefm, and uploading
    the folder makes it an `hf-hub:` model. The model's `logit_scale` is the fixed scale the student was
    trained at (its own parameter is never trained); None keeps the model's own (a shipped teacher).
    Both files are readable by everyone (0644), whatever the umask. `about`: provenance, stored under
    `dimefm`."""
    import math

    import torch
    from safetensors.torch import save_file

    from dimefm_pipeline.store.files import write_durable

    out.mkdir(parents=True, exist_ok=True)
    cfg_path, weights = out / HUB_CONFIG, out / HUB_WEIGHTS
    preprocess = {"size": student.image_size, "mean": list(student.mean), "std": list(student.std),
                  "interpolation": "bicubic", "resize_mode": "shortest"}
    config = {"model_cfg": student.config, "preprocess_cfg": preprocess, "dimefm": {"arch": student.arch, **(about or {})}}
    write_durable(cfg_path, json.dumps(config, indent=2).encode())
    module = getattr(student.model, "module", student.model)
    state = {k: v.detach().cpu().contiguous() for k, v in module.state_dict().items()}
    if "logit_scale" in state and logit_scale is not None:
        state["logit_scale"] = torch.full_like(state["logit_scale"], math.log(logit_scale))
    tmp = weights.with_name(weights.name + ".tmp")
    save_file(state, str(tmp))
    tmp.replace(weights)
    for path in (cfg_path, weights):
        path.chmod(0o644)
    return cfg_path, weights
