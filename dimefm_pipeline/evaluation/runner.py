"""`evaluate`: every metric of a suite for one model, as a JSON-ready dict.

Features of each image set are extracted once and shared by all tasks that use the same images;
zero-shot classifiers are built once per task and reused on every shifted copy of its test set.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from dimefm_pipeline.errors import DimefmError
from dimefm_pipeline.evaluation.clip_benchmark import clip_benchmark_suite, is_clip_benchmark_folder
from dimefm_pipeline.evaluation.features import encode_images, encode_texts, progress_bar
from dimefm_pipeline.evaluation.folder_suite import folder_suite
from dimefm_pipeline.evaluation.linear_probe import ProbeConfig, linear_probe
from dimefm_pipeline.evaluation.retrieval import recall_at_k
from dimefm_pipeline.evaluation.suite import ImageSet, Suite
from dimefm_pipeline.evaluation.world_suite import WorldSuiteConfig, world_suite
from dimefm_pipeline.evaluation.zeroshot import accuracy, classifier_weights, zero_shot_metrics


def _is_model_config(path: Path) -> bool:
    import json

    try:
        cfg = json.loads(path.read_text())
    except (OSError, ValueError):
        return False
    return isinstance(cfg, dict) and "embed_dim" in cfg and "vision_cfg" in cfg


def _load_hub_folder(path: Path, pretrained: str | None, *, device: str, quiet: bool):
    """An open_clip hub folder (a distilled student): `open_clip_config.json` + its weights."""
    import json

    from dimefm_pipeline.models import build, register_config, resolve_spec

    try:
        hub = json.loads((path / "open_clip_config.json").read_text())
        model_cfg = hub["model_cfg"]
    except (OSError, ValueError, KeyError) as exc:
        raise DimefmError(f"{path}/open_clip_config.json is not an open_clip model config: {exc}") from None
    arch = (hub.get("dimefm") or {}).get("arch") or f"local-{path.resolve().name}"
    register_config(arch, model_cfg)
    weights = pretrained or str(path / "open_clip_model.safetensors")
    return build(resolve_spec(arch, weights), device=device, quiet=quiet)


def load_eval_model(spec: str, pretrained: str | None = None, *, device: str = "cpu", quiet: bool = False):
    """Build the model named by `spec`: `world`, `ARCH:PRETRAINED`, `ARCH` (with `pretrained`), a
    model-config .json (with `pretrained`), or a student output folder (one model-config JSON plus
    its `.safetensors` weights)."""
    from dimefm_pipeline.models import SHIPPED_TEACHERS, build, resolve_spec

    path = Path(spec)
    shipped = spec in SHIPPED_TEACHERS
    if not shipped and path.is_dir() and (path / "open_clip_config.json").is_file():
        return _load_hub_folder(path, pretrained, device=device, quiet=quiet)
    if not shipped and path.is_dir():
        configs = [p for p in sorted(path.glob("*.json")) if _is_model_config(p)]
        if len(configs) != 1:
            raise DimefmError(f"{spec}: a model folder needs exactly one open_clip model-config JSON, "
                              f"found {len(configs)}")
        if pretrained is None:
            weights = sorted(path.glob("*.safetensors"))
            if len(weights) != 1:
                found = ", ".join(p.name for p in weights) or "none"
                raise DimefmError(f"{spec}: expected one .safetensors weights file (found: {found}); "
                                  "name one with --pretrained")
            pretrained = str(weights[0])
        model_spec = resolve_spec(str(configs[0]), pretrained)
    elif not shipped and not spec.endswith(".json") and ":" in spec:
        if pretrained is not None:
            raise DimefmError(f"--model {spec} already names its weights; drop --pretrained")
        arch, _, tag = spec.partition(":")
        model_spec = resolve_spec(arch, tag)
    else:
        model_spec = resolve_spec(spec, pretrained)
    return build(model_spec, device=device, quiet=quiet)


def resolve_suite(suite, world_config: WorldSuiteConfig | None = None) -> Suite:
    """A Suite from `world`, a folder path (CLIP_benchmark WebDataset datasets or a folder per
    class), or a Suite."""
    if isinstance(suite, Suite):
        return suite
    if str(suite) == "world":
        return world_suite(world_config or WorldSuiteConfig())
    path = Path(suite)
    if not path.is_dir():
        raise DimefmError(f"--suite must be `world` or a dataset folder; {suite} is neither")
    if is_clip_benchmark_folder(path):
        return clip_benchmark_suite(path)
    return folder_suite(path)


def _mean(values) -> float | None:
    vals = [v for v in values if v is not None and not np.isnan(v)]
    return float(np.mean(vals)) if vals else None


def evaluate(model, suite="world", *, world_config: WorldSuiteConfig | None = None, probe: bool = True,
             probe_config: ProbeConfig = ProbeConfig(), batch_size: int = 256, progress: bool = True) -> dict:
    """Zero-shot, linear probe, robustness and retrieval of `model` (a LoadedModel or anything with
    `model`, `preprocess`, `tokenizer`, `embed_dim`) on `suite`; accuracies are fractions."""
    suite = resolve_suite(suite, world_config)
    start = time.time()
    cache: dict[str, object] = {}
    tasks: dict[str, dict] = {}
    with progress_bar(progress) as bar:

        def feats(images: ImageSet):
            if images.key not in cache:
                cache[images.key] = encode_images(model, images.load(), batch_size=batch_size, progress=bar,
                                                  desc=images.key)
            return cache[images.key]

        for task in suite.tasks:
            weights = classifier_weights(model, task.classnames, task.templates)
            zs = zero_shot_metrics(feats(task.test.images), task.test.labels, weights)
            row: dict = {"n_classes": len(task.classnames), "chance": 1.0 / len(task.classnames),
                         "n_test": len(task.test.labels), "zero_shot": zs["acc1"], "zero_shot_acc5": zs["acc5"],
                         "zero_shot_mean_per_class_recall": zs["mean_per_class_recall"]}
            if probe and len(task.train.labels) and len(task.val.labels):  # a test-only dataset has no probe
                res = linear_probe(feats(task.train.images), task.train.labels, feats(task.val.images),
                                   task.val.labels, feats(task.test.images), task.test.labels,
                                   len(task.classnames), probe_config)
                row["linear_probe"] = res.accuracy
                row["linear_probe_weight_decay"] = res.weight_decay
            if task.shifts:
                row["robustness"] = {name: accuracy(feats(s.images), s.labels, weights)
                                     for name, s in task.shifts.items()}
            tasks[task.name] = row

        retrieval = {}
        if suite.retrieval is not None:
            r = suite.retrieval
            retrieval = recall_at_k(feats(r.images), encode_texts(model, list(r.captions)), r.caption_image)

    shift_names = sorted({s for row in tasks.values() for s in row.get("robustness", {})})
    robustness = {s: _mean(row["robustness"][s] for row in tasks.values() if s in row.get("robustness", {}))
                  for s in shift_names}
    spec = getattr(model, "spec", None)  # in-memory models (training, demos) have no spec
    return {
        "suite": suite.name,
        "model": {"arch": spec.arch, "pretrained": spec.pretrained,
                  "fingerprint": getattr(model, "fingerprint", None)} if spec is not None else None,
        "zero_shot_mean": _mean(row["zero_shot"] for row in tasks.values()),
        "linear_probe_mean": _mean(row.get("linear_probe") for row in tasks.values()),
        "robustness_mean": _mean(robustness.values()),
        "robustness": robustness,
        "retrieval": retrieval,
        "tasks": tasks,
        "seconds": round(time.time() - start, 1),
    }
