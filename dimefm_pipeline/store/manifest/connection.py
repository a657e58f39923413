"""The DuckDB manifest: one file that catalogs a cache (teacher, sources, shards, items, errors, runs).
Every SQL statement of the package lives in this package: `Manifest` is the connection; the other
modules are the queries, grouped by who asks (catalog, sources, commits, snapshot, mining, inspect).

Only one process ever opens it read-write (DuckDB's own file lock enforces this; we turn the lock
error into a clear message). Shard paths are stored relative to the cache dir, and the cache dir
relative to the manifest, so the whole folder can move. The SQL views over the Parquet shards name
their files relative to the manifest's folder too, and find that folder from any working directory
(`catalog._shard_list` says how), so a plain `duckdb` client reads them as dimefm does. Every source records an absolute root folder and its files relative to it (`source_files`), so
the data can move too (`dimefm sources relocate`).
"""

from __future__ import annotations

import contextlib
import os
import platform
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

from dimefm_pipeline.core.errors import DimefmError
from dimefm_pipeline.core.locks import is_held
from dimefm_pipeline.store.manifest.schema import SCHEMA, SCHEMA_VERSION, STORAGE_VERSION


def now() -> datetime:
    return datetime.now(timezone.utc).replace(tzinfo=None)


def versions() -> dict:
    """Versions of the pieces that shape an embedding, recorded with every run."""
    out = {"python": platform.python_version(), "platform": platform.platform()}
    for mod in ("dimefm_pipeline", "torch", "open_clip", "duckdb", "pyarrow", "numpy", "PIL"):
        m = sys.modules.get(mod)
        if m is None:
            try:
                m = __import__(mod)
            except ImportError:
                continue
        out[mod] = getattr(m, "__version__", "?")
    return out


def lock_wait() -> float:
    """Seconds a short manifest transaction waits for another process's (DIMEFM_MANIFEST_WAIT, default 300)."""
    return float(os.environ.get("DIMEFM_MANIFEST_WAIT", "300"))


class Manifest:
    """A DuckDB manifest file opened by this process (read-write: the single writer; or read-only)."""

    def __init__(self, path: str | Path, *, read_only: bool = False, create: bool = False, cache_dir: str | Path | None = None,
                 wait: float = 0.0):
        """`wait`: seconds to keep retrying while another process holds the lock (0: fail at once).

        Stage one fails at once on a second writer; the short bookkeeping writes of a distill run
        (its start, end and metrics) wait, so several trainings can share one cache.
        """
        self.path = Path(path).resolve()
        self.read_only = read_only
        if not self.path.exists():
            if not create:
                raise DimefmError(f"no manifest at {path}")
            if self.path.suffix != ".duckdb":
                raise DimefmError(f"manifest path must end in .duckdb: {path}")
            try:
                self.path.parent.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise DimefmError(f"cannot create the manifest's folder {self.path.parent}: {exc.strerror}") from None
        self.con = _connect(self.path, path, read_only, wait)
        version = self.meta("schema_version")
        if version is not None and version != SCHEMA_VERSION:
            self.con.close()
            raise DimefmError(f"{path} was written by another dimefm version (manifest schema {version}, this one reads "
                              f"{SCHEMA_VERSION}): encode into a new --cache")
        if not read_only:
            self.con.execute(SCHEMA)
            if self.meta("schema_version") is None:
                self.set_meta("schema_version", SCHEMA_VERSION)
                cdir = Path(cache_dir) if cache_dir else self.path.with_suffix("")
                self.set_meta("cache_dir", relative_if_inside(cdir.resolve(), self.path.parent))
            elif cache_dir and Path(cache_dir).resolve() != self.cache_dir:
                raise DimefmError(f"manifest {path} keeps its shards in {self.cache_dir}, not {cache_dir}")
            self._mark_gone_runs()
        elif self.meta("schema_version") is None:
            raise DimefmError(f"{path} is not a dimefm manifest (no schema_version)")
        self._current_relations()

    def _current_relations(self) -> None:
        """SQL views of an older layout (or made under another file name) are made anew: stored by a
        read-write open, this connection's own by a read-only one. Shards that cannot be read leave
        the views as they were (their queries then name the missing file; `info --verify` lists it)."""
        from dimefm_pipeline.store.manifest import catalog

        if self.meta("relations") == catalog.relations_layout(self):
            return
        try:
            catalog.refresh_relations(self, temporary=self.read_only)
        except DimefmError:
            pass

    def _mark_gone_runs(self) -> None:
        """Runs recorded `running` whose process is gone (nobody holds their lock) become `interrupted`;
        a run still going, here or in another process, keeps its record."""
        running = [r[0] for r in self.con.execute("SELECT run_id FROM runs WHERE status = 'running'").fetchall()]
        gone = [r for r in running if not is_held(run_lock_path(self.cache_dir, r))]
        if gone:
            self.con.execute("UPDATE runs SET status = 'interrupted', ended_at = ? WHERE list_contains(?, run_id)",
                             [now(), gone])

    def close(self) -> None:
        self.con.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def meta(self, name: str) -> str | None:
        try:
            row = first(self.con.execute("SELECT value FROM meta WHERE name = ?", [name]))
        except Exception:
            return None
        return row[0] if row else None

    def set_meta(self, name: str, value: str) -> None:
        self.con.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", [name, value])

    @property
    def cache_dir(self) -> Path:
        stored = Path(self.meta("cache_dir"))
        return stored if stored.is_absolute() else (self.path.parent / stored).resolve()

    def lock_down(self) -> None:
        """From now on this connection reads the manifest and the cache's own files and nothing else
        (DuckDB's external access off, the cache folder the one allowed directory, settings locked).
        The SQL views name their shards by absolute paths in this connection, which opened the
        manifest by its absolute path."""
        if not self.read_only:
            raise RuntimeError("lock_down is for read-only connections")
        self.con.execute(f"SET allowed_directories = ['{sql_string(str(self.cache_dir))}/']")
        self.con.execute("SET enable_external_access = false")
        self.con.execute("SET lock_configuration = true")

    def query(self, sql: str, params=None):
        return self.con.execute(sql, params or [])

    @contextlib.contextmanager
    def transaction(self):
        """Everything inside is written together or not at all."""
        self.con.execute("BEGIN TRANSACTION")
        try:
            yield self
        except BaseException:
            self.con.execute("ROLLBACK")
            raise
        self.con.execute("COMMIT")


RUNS_DIR = "_runs"  # in the cache folder: one lock file per run in progress, held by its process


def run_lock_path(cache_dir: Path, run_id: int) -> Path:
    return Path(cache_dir) / RUNS_DIR / f"{run_id}.lock"


def record(cache, fn):
    """Run `fn(manifest)` in a short read-write open of the manifest; runs sharing a cache (ablations,
    sweeps, an encode beside a training) take turns, waiting up to `lock_wait()` for each other."""
    with Manifest(cache, wait=lock_wait()) as man:
        return fn(man)


def _connect(resolved: Path, path, read_only: bool, wait: float):
    """A DuckDB connection to the manifest file, retrying for `wait` seconds while another process
    holds its lock; DuckDB's errors as one clear line."""
    import duckdb

    deadline = time.monotonic() + wait
    try:
        while True:
            try:
                if read_only:
                    return duckdb.connect(str(resolved), read_only=True)
                return duckdb.connect(str(resolved), config={"storage_compatibility_version": STORAGE_VERSION})
            except duckdb.IOException as exc:
                if "lock" not in str(exc).lower() or time.monotonic() >= deadline:
                    raise
                time.sleep(0.2)
    except duckdb.IOException as exc:
        msg = str(exc)
        if "lock" in msg.lower():
            raise DimefmError(f"manifest {path} is open for writing by another process; only one writer at a time ({msg.splitlines()[0]})") from None
        if "not a valid DuckDB database" in msg:
            raise DimefmError(f"{path} is not a DuckDB manifest (not a DuckDB database file)") from None
        raise DimefmError(f"cannot open manifest {path}: {msg.splitlines()[0]}") from None
    except duckdb.Error as exc:
        raise DimefmError(f"{path} is not a DuckDB manifest: {str(exc).splitlines()[0]}") from None

def first(result):
    """First row of a result, fetched completely (DuckDB refuses new work while a result is half read)."""
    rows = result.fetchall()
    return rows[0] if rows else None


def sql_string(text: str) -> str:
    return text.replace("'", "''")


def relative_if_inside(path: Path, base: Path) -> str:
    try:
        return os.path.relpath(path, base) if path.is_relative_to(base) else str(path)
    except ValueError:
        return str(path)
