"""The cheap checks of an encode command, run before torch is imported, and the undoing of the
folders they made when the command then fails."""

from __future__ import annotations

from pathlib import Path

from dimefm_pipeline.core.errors import DimefmError
from dimefm_pipeline.encode.config import EncodeConfig
from dimefm_pipeline.formats import resolve_sources
from dimefm_pipeline.formats.files import file_entries


def check_early(cfg: EncodeConfig) -> Path | None:
    """The cheap checks of a command (sources resolve to readable files, a new manifest has a teacher
    and a folder that can be made), before anything heavy is imported: a typo costs a fraction of a
    second. Returns the topmost folder made for a new manifest, if any."""
    for spec in resolve_sources(cfg.sources, cfg.modality, cfg.source_options):
        file_entries(spec.root, spec.files)  # the files of a pattern (a folder is listed by planning)
    path = Path(cfg.cache)
    if path.exists():
        return None
    if path.suffix != ".duckdb":
        raise DimefmError(f"manifest path must end in .duckdb: {cfg.cache}")
    if cfg.teacher is None:
        raise DimefmError(f"no manifest at {cfg.cache}: check the path to add to an existing cache, or pass --teacher "
                          "(and --pretrained) to start a new one")
    folder = path.resolve().parent
    made = next((f for f in reversed([folder, *folder.parents]) if not f.exists()), None)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DimefmError(f"cannot create the manifest's folder {folder}: {exc.strerror}") from None
    return made


def remove_empty_folders(folder: Path, top: Path) -> None:
    """Remove `folder` and its parents up to `top`, as long as they are empty."""
    while True:
        try:
            folder.rmdir()
        except OSError:
            return
        if folder == top:
            return
        folder = folder.parent
