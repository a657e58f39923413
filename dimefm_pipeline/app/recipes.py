"""Recipes: one TOML file in `stages/` describes a whole run, so a run is reproducible from one file.

Sections (all optional but [run]): [run] name, cache, out; [world] (generate the built-in corpora);
[data] images / texts (source lists) and per-modality options; [encode]; [mine]; [distill] (every
`DistillConfig` field, loss options flat or under [distill.loss]); [eval]. Strings may use `{out}`
and `{cache_dir}`. `--set section.key=value` overrides any value (the value is parsed as TOML).

Relative paths of what a recipe reads (data sources, the student and teacher configs, `init`, the
eval suite) are resolved against the recipe file, so a recipe works from any directory and a shipped
recipe finds the files shipped beside it; `--set` values are paths as the user typed them, relative
to the working directory. What a run writes (`run.out`, `run.cache`) goes under the working
directory: a shipped recipe lives inside the installed package, which is no place for runs.
"""

from __future__ import annotations

import copy
import tomllib
from dataclasses import dataclass
from pathlib import Path

from dimefm_pipeline.core.errors import DimefmError

SECTIONS = {"run", "world", "data", "encode", "mine", "distill", "eval"}
STAGES_DIR = Path(__file__).resolve().parents[1] / "stages"  # the repository's stages/, shipped inside the wheel
# (section, key) of values that name files a run reads; a relative one is relative to the recipe file
INPUT_PATHS = {("data", "images"), ("data", "texts"), ("encode", "teacher"), ("encode", "pretrained"),
               ("distill", "student"), ("distill", "init"), ("eval", "suite")}


@dataclass(frozen=True)
class Recipe:
    path: Path
    raw: dict

    def section(self, name: str) -> dict | None:
        sec = self.raw.get(name)
        return copy.deepcopy(sec) if sec is not None else None

    @property
    def name(self) -> str:
        return self.raw["run"].get("name", self.path.stem)

    @property
    def out(self) -> Path:
        return Path(self.raw["run"].get("out", f"runs/{self.name}"))

    @property
    def cache(self) -> Path:
        return Path(_fill(self.raw["run"].get("cache", "{out}/manifest.duckdb"), self))


def _fill(value, recipe: Recipe):
    if isinstance(value, str):
        return value.replace("{out}", str(recipe.out))
    if isinstance(value, list):
        return [_fill(v, recipe) for v in value]
    if isinstance(value, dict):
        return {k: _fill(v, recipe) for k, v in value.items()}
    return value


def find_recipe(name_or_path: str) -> Path:
    """A recipe path, or the name of one shipped in `stages/` (`world-demo` -> stages/world-demo.toml)."""
    p = Path(name_or_path)
    if p.is_file():
        return p
    shipped = STAGES_DIR / f"{name_or_path.removesuffix('.toml')}.toml"
    if shipped.is_file():
        return shipped
    raise DimefmError(f"no recipe {name_or_path} (shipped: {', '.join(sorted(q.stem for q in STAGES_DIR.glob('*.toml')))})")


def load_recipe(name_or_path: str, overrides: list[str] | tuple[str, ...] = ()) -> Recipe:
    """Read a recipe and apply `section.key=value` overrides."""
    path = find_recipe(name_or_path)
    try:
        raw = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as exc:
        raise DimefmError(f"{path}: invalid TOML: {exc}") from None
    unknown = set(raw) - SECTIONS
    if unknown:
        raise DimefmError(f"{path}: unknown section(s) {', '.join(sorted(unknown))} (known: {', '.join(sorted(SECTIONS))})")
    raw.setdefault("run", {})
    _resolve_inputs(raw, path.resolve().parent)
    for item in overrides:
        key, eq, value = item.partition("=")
        if not eq or "." not in key:
            raise DimefmError(f"--set takes section.key=value, not {item!r}")
        try:
            parsed = tomllib.loads(f"v = {value}")["v"]
        except tomllib.TOMLDecodeError:
            parsed = value  # a bare word is a string
        *parents, leaf = key.split(".")
        if parents[0] not in SECTIONS:
            raise DimefmError(f"--set {key}: unknown section {parents[0]!r}")
        node = raw
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = parsed
    recipe = Recipe(path, raw)
    return Recipe(path, _fill(raw, recipe))


def _resolve_inputs(raw: dict, base: Path) -> None:
    """Make the recipe's relative input paths absolute against its own folder (see the module doc).
    A value that is not a path (an open_clip name like `ViT-L-14`, a tag like `openai`, `world`) is
    left alone: only values with a path separator or a file suffix, or that exist beside the recipe."""
    def resolve(v):
        if not isinstance(v, str) or not v or Path(v).is_absolute() or v.startswith("{"):
            return v
        looks_like_path = "/" in v or Path(v).suffix in (".json", ".pt", ".bin", ".safetensors", ".tar", ".txt", ".jsonl",
                                                         ".parquet", ".tsv") or (base / v).exists()
        return str(base / v) if looks_like_path else v

    for section, key in INPUT_PATHS:
        sec = raw.get(section)
        if isinstance(sec, dict) and key in sec:
            sec[key] = [resolve(v) for v in sec[key]] if isinstance(sec[key], list) else resolve(sec[key])


def distill_config(recipe: Recipe, **extra):
    """The recipe's [distill] section as a DistillConfig, with cache and out filled in."""
    from dimefm_pipeline.distill.config import DistillConfig

    sec = recipe.section("distill") or {}
    sec.setdefault("cache", str(recipe.cache))
    sec.setdefault("out", str(recipe.out / "student"))
    sec.update(extra)
    return DistillConfig.from_dict(sec)
