"""Class names and prompt templates: from files, a folder suite, or the sets open_clip ships. Used by
the folder suites of `dimefm eval` and by `dimefm corpus prompts|filter`."""

from __future__ import annotations

from pathlib import Path

from dimefm_pipeline.core.errors import DimefmError

SHIPPED_CLASSES = ("imagenet",)
SHIPPED_TEMPLATES = ("openai", "simple")


def load_classes(spec: str) -> list[list[str]]:
    """Class names, each class a list of names (its synonyms): a file, a folder suite, or `imagenet`."""
    if spec in SHIPPED_CLASSES:
        from open_clip.zero_shot_metadata import IMAGENET_CLASSNAMES

        return [[name] for name in IMAGENET_CLASSNAMES]
    path = Path(spec)
    if path.is_dir():
        path = path / "classnames.txt"
        if not path.is_file():
            raise DimefmError(f"{spec} is a folder without classnames.txt (the folder-suite convention)")
    elif not path.is_file():
        raise DimefmError(f"no class-name file, folder suite or shipped set {spec!r} (shipped: {', '.join(SHIPPED_CLASSES)})")
    classes = []
    for line in path.read_text(encoding="utf-8-sig").splitlines():
        names = [n.strip() for n in line.split(";") if n.strip()]
        if names and not names[0].startswith("#"):
            classes.append(names)
    if not classes:
        raise DimefmError(f"{path} holds no class names")
    return classes


def load_templates(spec: str) -> list[str]:
    """Prompt templates with `{c}` where the class name goes: a file, or `openai` / `simple`."""
    if spec in SHIPPED_TEMPLATES:
        from open_clip.zero_shot_metadata import OPENAI_IMAGENET_TEMPLATES, SIMPLE_IMAGENET_TEMPLATES

        return [t("{c}") for t in (OPENAI_IMAGENET_TEMPLATES if spec == "openai" else SIMPLE_IMAGENET_TEMPLATES)]
    path = Path(spec)
    if not path.is_file():
        raise DimefmError(f"no template file or shipped set {spec!r} (shipped: {', '.join(SHIPPED_TEMPLATES)})")
    templates = [t.strip().replace("{}", "{c}") for t in path.read_text(encoding="utf-8-sig").splitlines() if t.strip()]
    bad = [t for t in templates if "{c}" not in t]
    if not templates or bad:
        raise DimefmError(f"{path}: every template needs {{c}} (or {{}}) where the class name goes" + (f": {bad[0]!r}" if bad else ""))
    return templates
