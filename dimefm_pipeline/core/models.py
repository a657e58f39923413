"""The one model factory: teachers, students, world models and models under evaluation, from open_clip
names, config files and weights.

A model is named by an open_clip architecture (`ViT-L-14`), a model config the package ships
(`core/model_configs/`, registered with open_clip by its file stem: the world teacher and student,
`vit-b-32-768`), a path to an open_clip model-config JSON (registered under its file stem, as
open_clip itself does), or `world` for the teacher shipped with the package. Weights come from an
open_clip pretrained tag, a local checkpoint (safetensors, or a torch file loaded with
`weights_only=True`), or the explicit word `random`. `build` gives a frozen model with its eval
transform and tokenizer; `create` a freshly initialised one to train; `load` whatever `dimefm eval
--model` names, a distilled student's folder included.
"""

from __future__ import annotations

import contextlib
import json
import logging
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from dimefm_pipeline.core.errors import DimefmError
from dimefm_pipeline.core.weights import load_state_dict, state_fingerprint

PACKAGE_DIR = Path(__file__).resolve().parents[1]
CONFIG_DIR = Path(__file__).resolve().parent / "model_configs"  # every model config the package ships
WORLD_ARCH = "dimefm-world-teacher"
WORLD_WEIGHTS = PACKAGE_DIR / "world" / "assets" / "world-teacher.safetensors"
WORLD_HARD_WEIGHTS = PACKAGE_DIR / "world" / "assets" / "world-hard-teacher.safetensors"
# Teachers shipped inside the package: the name a user types -> (architecture, weights file).
SHIPPED_TEACHERS: dict[str, tuple[str, Path]] = {"world": (WORLD_ARCH, WORLD_WEIGHTS),
                                                 "world-hard": (WORLD_ARCH, WORLD_HARD_WEIGHTS)}
RANDOM = "random"
RANDOM_SEED = 0  # random teachers are seeded so every rank (and every rerun) builds the same one


@dataclass(frozen=True)
class ModelSpec:
    """What to build: an architecture name (already registered with open_clip) and where weights come from."""

    arch: str
    pretrained: str  # open_clip tag, checkpoint path, or "random"
    config: dict = field(default_factory=dict, compare=False)


@dataclass
class LoadedModel:
    """A built model with everything needed to feed it exactly as open_clip does."""

    model: Any
    preprocess: Callable  # open_clip eval transform: PIL image -> tensor
    tokenizer: Callable  # list[str] -> LongTensor
    spec: ModelSpec
    fingerprint: str  # sha256 over the state dict: identifies the weights, whatever their origin
    embed_dim: int
    image_size: int
    context_length: int
    preprocess_cfg: dict


@contextlib.contextmanager
def quiet_open_clip():
    """open_clip logs a root-level warning for every model built without a tag, and an error line before
    raising when weights cannot be downloaded; we warn ourselves, and its exception becomes our one
    error line."""
    logging.disable(logging.ERROR)
    try:
        yield
    finally:
        logging.disable(logging.NOTSET)


def register_configs() -> None:
    """Register the package's own model configs (world teacher and student) with open_clip."""
    import open_clip

    for path in sorted(CONFIG_DIR.glob("*.json")):
        if path.stem not in open_clip.list_models():
            open_clip.add_model_config(path)


def register_config(arch: str, config: dict) -> None:
    """Register an architecture from its config dict (as recorded in a manifest or a student folder)."""
    import tempfile

    import open_clip

    if arch in open_clip.list_models():
        return
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / f"{arch}.json"
        path.write_text(json.dumps(config))
        open_clip.add_model_config(path)


def resolve_spec(model: str, pretrained: str | None, *, config: dict | None = None) -> ModelSpec:
    """Turn CLI words into a ModelSpec, registering a config file (or a recorded config) if given."""
    import open_clip

    register_configs()
    if config and not model.endswith(".json"):
        register_config(model, config)
    if pretrained not in (None, RANDOM) and Path(pretrained).exists():
        pretrained = str(Path(pretrained).resolve())
    if model in SHIPPED_TEACHERS:
        arch, weights = SHIPPED_TEACHERS[model]
        if pretrained not in (None, model):
            return resolve_spec(arch, pretrained)
        if not weights.exists():
            raise DimefmError(f"the shipped {model} teacher weights are missing: {weights}")
        return ModelSpec(arch, str(weights), _config_of(arch))
    path = Path(model)
    if model.endswith(".json"):
        if not path.is_file():
            raise DimefmError(f"model config not found: {model}")
        try:
            json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise DimefmError(f"model config {model} is not valid JSON: {exc}") from None
        open_clip.add_model_config(path)
        arch = path.stem
    else:
        arch = model
        if arch not in open_clip.list_models():
            raise DimefmError(
                f"unknown model {arch!r}: give an open_clip architecture (see `open_clip.list_models()`), "
                "a model-config .json path, `world` or `world-hard`"
            )
    if pretrained is None:
        raise DimefmError(
            f"--pretrained is required for {arch}: an open_clip tag (e.g. openai), a checkpoint path, "
            "or `random` for random weights (tests and benchmarks only)"
        )
    return ModelSpec(arch, pretrained, _config_of(arch))


def _config_of(arch: str) -> dict:
    import open_clip

    cfg = open_clip.get_model_config(arch)
    if cfg is None:
        raise DimefmError(f"open_clip has no config for {arch!r}")
    return cfg


def model_config(name: str) -> tuple[str, dict]:
    """(architecture name, a copy of its open_clip config) of an open_clip or shipped name, or of a
    model-config .json file (named after its stem)."""
    import copy

    import open_clip

    register_configs()
    if name.endswith(".json"):
        path = Path(name)
        if not path.is_file():
            raise DimefmError(f"model config not found: {name}")
        try:
            return path.stem, json.loads(path.read_text())
        except json.JSONDecodeError as exc:
            raise DimefmError(f"model config {name} is not valid JSON: {exc}") from None
    cfg = open_clip.get_model_config(name)
    if cfg is None:
        raise DimefmError(f"unknown architecture {name!r} (see open_clip.list_models())")
    return name, copy.deepcopy(cfg)


def image_size(config: dict) -> int:
    """The input side of a model config's image tower."""
    size = config.get("vision_cfg", {}).get("image_size", 224)
    return size[0] if isinstance(size, (list, tuple)) else int(size)


def create(arch: str, *, seed: int):
    """A freshly initialised `arch` (a registered name) with its eval transform and tokenizer, to be
    trained: students and the world teacher. Its parameters are drawn from `seed` alone; the
    caller's random state is left as it was."""
    import open_clip
    import torch

    register_configs()
    with torch.random.fork_rng(devices=[]), quiet_open_clip():
        torch.manual_seed(seed)
        model, _, preprocess = open_clip.create_model_and_transforms(arch)
    return model, preprocess, open_clip.get_tokenizer(arch)


def build(spec: ModelSpec, *, device: str = "cpu", quiet: bool = False) -> LoadedModel:
    """Build the model of `spec` in eval mode with its open_clip eval transform and tokenizer."""
    import open_clip
    import torch

    register_configs()
    if spec.config:
        register_config(spec.arch, spec.config)
    tag = None
    if spec.pretrained == RANDOM:
        if not quiet:
            warnings.warn(
                f"building {spec.arch} with RANDOM weights: embeddings are meaningless "
                "(use only for tests and benchmarks)",
                stacklevel=2,
            )
    elif not Path(spec.pretrained).exists():
        tag = spec.pretrained
        available = {t for a, t in open_clip.list_pretrained() if a == spec.arch}
        if tag not in available:
            raise DimefmError(
                f"--pretrained {tag!r} is neither a file nor an open_clip tag of {spec.arch} "
                f"(known tags: {', '.join(sorted(available)) or 'none'})"
            )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(RANDOM_SEED)
        try:
            with quiet_open_clip():
                model, _, preprocess = open_clip.create_model_and_transforms(spec.arch, pretrained=tag)
        except RuntimeError as exc:  # offline machines fail the download here
            raise DimefmError(f"cannot load open_clip weights {spec.arch}:{tag} ({str(exc).split('. ')[0]}): on a "
                              "machine without network, pass a local checkpoint file as --pretrained, or fill the "
                              "Hugging Face cache (HF_HOME) where there is network") from None
    if tag is None and spec.pretrained != RANDOM:
        state = load_state_dict(spec.pretrained)
        try:
            model.load_state_dict(state, strict=True)
        except RuntimeError as exc:
            raise DimefmError(f"checkpoint {spec.pretrained} does not fit {spec.arch}: {exc}") from None
    model.eval().requires_grad_(False).to(device)
    cfg = dict(spec.config or _config_of(spec.arch))
    if any(type(m).__name__ == "QuickGELU" for m in model.modules()):
        cfg["quick_gelu"] = True  # set by some pretrained tags (openai), not by the architecture's config
    spec = ModelSpec(spec.arch, spec.pretrained, cfg)
    pp = getattr(getattr(model, "visual", None), "preprocess_cfg", None) or {}
    return LoadedModel(
        model=model,
        preprocess=preprocess,
        tokenizer=open_clip.get_tokenizer(spec.arch),
        spec=spec,
        fingerprint=state_fingerprint(model.state_dict()),
        embed_dim=int(cfg["embed_dim"]),
        image_size=image_size(cfg),
        context_length=int(cfg.get("text_cfg", {}).get("context_length", 77)),
        preprocess_cfg={k: (list(v) if isinstance(v, tuple) else v) for k, v in dict(pp).items()},
    )


def _is_model_config(path: Path) -> bool:
    try:
        cfg = json.loads(path.read_text())
    except (OSError, ValueError):
        return False
    return isinstance(cfg, dict) and "embed_dim" in cfg and "vision_cfg" in cfg


def _load_hub_folder(path: Path, pretrained: str | None, *, device: str, quiet: bool):
    """An open_clip hub folder (a distilled student): `open_clip_config.json` + its weights."""
    try:
        hub = json.loads((path / "open_clip_config.json").read_text())
        model_cfg = hub["model_cfg"]
    except (OSError, ValueError, KeyError) as exc:
        raise DimefmError(f"{path}/open_clip_config.json is not an open_clip model config: {exc}") from None
    arch = (hub.get("dimefm") or {}).get("arch") or f"local-{path.resolve().name}"
    register_config(arch, model_cfg)
    weights = pretrained or str(path / "open_clip_model.safetensors")
    return build(resolve_spec(arch, weights), device=device, quiet=quiet)


def load(spec: str, pretrained: str | None = None, *, device: str = "cpu", quiet: bool = False) -> LoadedModel:
    """Build the frozen model named by `spec` (`dimefm eval --model`): `world`, `ARCH:PRETRAINED`,
    `ARCH` (with `pretrained`), a model-config .json (with `pretrained`), a distilled student's folder
    (`open_clip_config.json`), or a folder with one model-config JSON and its `.safetensors` weights."""
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
    elif not shipped and "/" in spec and ":" not in spec and not spec.endswith(".json") and not path.exists():
        raise DimefmError(f"--model {spec}: no such folder or file (a student's --out folder, a model-config .json, "
                          "an open_clip name or `world`)")
    elif not shipped and not spec.endswith(".json") and ":" in spec:
        if pretrained is not None:
            raise DimefmError(f"--model {spec} already names its weights; drop --pretrained")
        arch, _, tag = spec.partition(":")
        model_spec = resolve_spec(arch, tag)
    else:
        model_spec = resolve_spec(spec, pretrained)
    return build(model_spec, device=device, quiet=quiet)
