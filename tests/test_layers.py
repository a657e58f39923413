"""The package's layers import only downward: app -> stages -> store -> formats -> core.

Every import statement of every module is read from its source (function-local imports included),
so an import placed inside a function to dodge a cycle counts like any other.
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "dimefm_pipeline"

# Top-level part of the package -> layer (higher layers may import lower ones, never the reverse).
LAYERS = {
    "": 0, "core": 0,  # "": the package itself (its version)
    "formats": 1,
    "store": 2,
    "encode": 3, "mine": 3, "distill": 3, "evaluation": 3, "world": 3,
    "app": 4, "cli": 4, "__main__": 4,
}
LAYER_NAMES = {0: "core", 1: "formats", 2: "store", 3: "stages", 4: "app"}
# A stage imports no other stage, except these (importer, imported): the built-in world evaluates
# with the evaluation harness (its suite is built of the harness's tasks; its teacher checks itself).
STAGE_IMPORTS = {("world", "evaluation")}


def module_name(path: Path, root: Path = PACKAGE) -> str:
    parts = list(path.relative_to(root.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(path: Path, root: Path = PACKAGE) -> list[tuple[int, str]]:
    """(line, imported module) of every import in the file, relative ones resolved."""
    name = module_name(path, root)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    out = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            out += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            out.append((node.lineno, target))
            # `from dimefm_pipeline import models`: the imported names may be modules
            out += [(node.lineno, f"{target}.{a.name}") for a in node.names if _is_module(root, f"{target}.{a.name}")]
    return [(line, m) for line, m in out if m == "dimefm_pipeline" or m.startswith("dimefm_pipeline.")]


def _is_module(root: Path, module: str) -> bool:
    path = root.parent.joinpath(*module.split("."))
    return path.is_dir() or path.with_suffix(".py").is_file()


def part_of(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def layer_violations(root: Path = PACKAGE) -> list[str]:
    found = []
    for path in sorted(root.rglob("*.py")):
        mine = part_of(module_name(path, root))
        assert mine in LAYERS, f"{path}: the package part {mine!r} has no layer in tests/test_layers.py"
        seen = set()
        for line, target in imports_of(path, root):
            theirs = part_of(target)
            if theirs == mine or (line, theirs) in seen:
                continue
            seen.add((line, theirs))
            assert theirs in LAYERS, f"{path}:{line} imports {target}, which has no layer"
            where = f"{path.relative_to(root.parent)}:{line} imports {target}"
            if LAYERS[theirs] > LAYERS[mine]:
                found.append(f"{where}: {LAYER_NAMES[LAYERS[mine]]} -> {LAYER_NAMES[LAYERS[theirs]]} (a layer above)")
            elif LAYERS[theirs] == LAYERS[mine] == 3 and (mine, theirs) not in STAGE_IMPORTS:
                found.append(f"{where}: stage {mine} -> stage {theirs}")
    return found


def test_every_import_goes_down_a_layer():
    assert layer_violations() == []


def test_an_upward_import_is_found(tmp_path):
    """The check itself: a core module importing the app, inside a function, is reported."""
    import shutil

    copy = tmp_path / "dimefm_pipeline"
    shutil.copytree(PACKAGE, copy, ignore=shutil.ignore_patterns("__pycache__", "stages", "assets"))
    victim = copy / "core" / "progress.py"
    victim.write_text(victim.read_text() + "\n\ndef _late():\n    from dimefm_pipeline.app import recipes\n")
    found = [v for v in layer_violations(copy) if "core/progress.py" in v]
    assert len(found) == 1 and "core -> app" in found[0], found


def test_duckdb_is_imported_by_the_manifest_package_alone():
    """All SQL lives in `store.manifest`: no other module talks to DuckDB."""
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        if path.parent.name == "manifest":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else (
                [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            found += [f"{path.relative_to(PACKAGE.parent)}:{node.lineno}" for n in names if n.split(".")[0] == "duckdb"]
    assert found == []
