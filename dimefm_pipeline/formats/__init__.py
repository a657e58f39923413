"""Source formats: one module per format (folder, webdataset, parquet, tsv, lines: txt and jsonl),
each a `SourceFormat` that plans a source into units, reads a unit's records in stage one and reads
an image again at its locator in stage two; beside them the planner, decoding, cached views and the
loading guards. A new format is one new module here holding `FORMATS`.
"""

from __future__ import annotations

import functools
import importlib
import pkgutil


@functools.cache
def registry() -> dict:
    """Every format of this package by name (its `sources.format` in the manifest)."""
    found = {}
    for info in pkgutil.iter_modules(__path__):
        for fmt in getattr(importlib.import_module(f"{__name__}.{info.name}"), "FORMATS", ()):
            found[fmt.name] = fmt
    return found


def format_named(name: str):
    """The `SourceFormat` called `name`."""
    return registry()[name]


from dimefm_pipeline.formats.base import SourceSpec, Unit  # noqa: E402
from dimefm_pipeline.formats.planner import plan_source, resolve_source, resolve_sources  # noqa: E402

__all__ = ["SourceSpec", "Unit", "format_named", "plan_source", "registry", "resolve_source", "resolve_sources"]
