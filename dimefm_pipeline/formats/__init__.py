"""Readers for image and sentence corpora.

A source is one CLI argument (a folder, a file, or a brace/glob pattern of files). Planning a source
splits it into deterministic *units* (a chunk of files, one tar, a row range, a line range) that are
the unit of work, of resume and of distribution across ranks: the same source always yields the
same units with the same items in the same order, so a rerun or another rank recomputes exactly the
same rows.
"""

from dimefm_pipeline.formats.base import SourceSpec, Unit, expand_pattern, fingerprint_files
from dimefm_pipeline.formats.planner import plan_source, resolve_source, resolve_sources

__all__ = ["SourceSpec", "Unit", "expand_pattern", "fingerprint_files", "plan_source", "resolve_source", "resolve_sources"]
