"""The DuckDB manifest of a cache, and every SQL statement of the package (`connection` has the
details of opening it; the other modules hold the queries, grouped by who asks)."""

from dimefm_pipeline.store.manifest.catalog import TeacherInfo
from dimefm_pipeline.store.manifest.connection import Manifest, lock_wait, now, record

__all__ = ["Manifest", "TeacherInfo", "lock_wait", "now", "record"]
