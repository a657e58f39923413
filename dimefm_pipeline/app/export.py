"""A shipped teacher written as an open_clip hub folder, the same folder a distilled student gets.

`open_clip.create_model_and_transforms("local-dir:OUT")` (and so CLIP_benchmark's
`--model_type open_clip --model local-dir:OUT`) then loads the teacher without dimefm installed,
with the weights, tokenizer and preprocessing that `dimefm eval --model NAME` uses.
"""

from __future__ import annotations

from pathlib import Path

from dimefm_pipeline.core import models
from dimefm_pipeline.core.errors import DimefmError


def export_teacher(name: str, out: str | Path) -> tuple[Path, Path]:
    """Write the shipped teacher `name` (a key of `models.SHIPPED_TEACHERS`) to the folder `out`
    (absent or empty): `open_clip_config.json` and `open_clip_model.safetensors`, both 0644."""
    import open_clip

    from dimefm_pipeline.distill.student import Student, save_student

    if name not in models.SHIPPED_TEACHERS:
        known = ", ".join(sorted(models.SHIPPED_TEACHERS))
        raise DimefmError(f"unknown shipped teacher {name!r}: choose one of {known}")
    out = Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise DimefmError(f"--out {out} already exists and is not an empty folder: name a new folder or remove it")
    loaded = models.build(models.resolve_spec(name, None), quiet=True)
    pp = loaded.preprocess_cfg
    teacher = Student(model=loaded.model, arch=loaded.spec.arch, config=loaded.spec.config, tokenizer=None,
                      image_size=loaded.image_size, mean=tuple(pp.get("mean", open_clip.OPENAI_DATASET_MEAN)),
                      std=tuple(pp.get("std", open_clip.OPENAI_DATASET_STD)))
    about = {"teacher": name, "fingerprint": loaded.fingerprint}
    return save_student(teacher, out, logit_scale=None, about=about)
