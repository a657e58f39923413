"""The DuckDB manifest: one file that catalogs a cache (teacher, sources, shards, items, errors, runs).

Only one process ever opens it read-write (DuckDB's own file lock enforces this; we turn the lock
error into a clear message). Shard paths are stored relative to the cache dir, and the cache dir
relative to the manifest, so the whole folder can move. The SQL views over the Parquet shards name
their files relative to the manifest's folder too: DuckDB resolves such paths against the client's
working directory or its `file_search_path`, which every connection made here sets to the
manifest's folder (a plain `duckdb` client: start it in that folder, or SET file_search_path).
Every source records an absolute root folder and its files relative to it (`source_files`), so
the data can move too (`dimefm sources relocate`).
"""

from __future__ import annotations

import json
import os
import platform
import sys
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from dimefm_pipeline.core.errors import DimefmError

SCHEMA_VERSION = "2"
# Files written in this format open in every DuckDB client from 1.1 on (newer defaults do not).
STORAGE_VERSION = "v1.1.0"

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (name VARCHAR PRIMARY KEY, value VARCHAR);
CREATE TABLE IF NOT EXISTS teachers (
    teacher_id INTEGER, arch VARCHAR, pretrained VARCHAR, fingerprint VARCHAR, embed_dim INTEGER,
    image_size INTEGER, context_length INTEGER, preprocess VARCHAR, normalized BOOLEAN, dtype VARCHAR,
    config VARCHAR, created_at TIMESTAMP);
CREATE TABLE IF NOT EXISTS sources (
    source_id INTEGER, modality VARCHAR, uri VARCHAR, format VARCHAR, fingerprint VARCHAR,
    options VARCHAR, files INTEGER, shard_size INTEGER, units INTEGER, duplicates BIGINT,
    added_at TIMESTAMP, run_id INTEGER, root VARCHAR, repeated_keys BIGINT, other_files VARCHAR);
CREATE TABLE IF NOT EXISTS source_files (
    source_id INTEGER, file_id INTEGER, path VARCHAR, size BIGINT, mtime_ns BIGINT);
CREATE TABLE IF NOT EXISTS source_moves (
    source_id INTEGER, old_root VARCHAR, new_root VARCHAR, files_checked BIGINT, items_checked BIGINT,
    run_id INTEGER, moved_at TIMESTAMP);
CREATE TABLE IF NOT EXISTS units (
    source INTEGER, unit INTEGER, state VARCHAR, items BIGINT, errors BIGINT, duplicates BIGINT,
    truncated BIGINT, rank INTEGER, run_id INTEGER, completed_at TIMESTAMP, pack_path VARCHAR,
    pack_checksum VARCHAR, pack_bytes BIGINT, pack_sample VARCHAR);
CREATE TABLE IF NOT EXISTS shards (
    shard_id INTEGER, source INTEGER, unit INTEGER, part INTEGER, modality VARCHAR, path VARCHAR,
    parquet_path VARCHAR, rows INTEGER, dim INTEGER, dtype VARCHAR, checksum VARCHAR,
    parquet_checksum VARCHAR, bytes BIGINT, state VARCHAR, created_at TIMESTAMP, loc_path VARCHAR,
    loc_checksum VARCHAR, sample VARCHAR, loc_sample VARCHAR);
CREATE TABLE IF NOT EXISTS token_files (
    tokenizer VARCHAR, text_checksum VARCHAR, path VARCHAR, "rows" BIGINT, checksum VARCHAR, created_at TIMESTAMP);
CREATE TABLE IF NOT EXISTS items (
    item_id BIGINT, modality VARCHAR, source INTEGER, key VARCHAR, shard INTEGER, "row" INTEGER,
    text_hash BIGINT, file INTEGER, pos BIGINT, "view" SMALLINT);
CREATE TABLE IF NOT EXISTS errors (
    source INTEGER, key VARCHAR, stage VARCHAR, reason VARCHAR, run_id INTEGER, created_at TIMESTAMP, file INTEGER);
CREATE TABLE IF NOT EXISTS runs (
    run_id INTEGER, kind VARCHAR, command VARCHAR, config VARCHAR, versions VARCHAR, world_size INTEGER,
    started_at TIMESTAMP, ended_at TIMESTAMP, status VARCHAR, output VARCHAR, metrics VARCHAR);
CREATE TABLE IF NOT EXISTS minings (
    mining_id INTEGER, run_id INTEGER, k INTEGER, index_type VARCHAR, images BIGINT, texts BIGINT,
    created_at TIMESTAMP, state VARCHAR, image_block INTEGER);
CREATE TABLE IF NOT EXISTS pseudo_pairs (
    mining_id INTEGER, image_item BIGINT, "rank" INTEGER, text_item BIGINT, score FLOAT);
CREATE TABLE IF NOT EXISTS metrics (run_id INTEGER, step INTEGER, name VARCHAR, value DOUBLE);
CREATE SEQUENCE IF NOT EXISTS item_seq START 1;
"""

VIEW_COLUMNS = {
    "image": "p.key, f.path AS file, p.view, p.embedding, s.uri AS source, p.source_id, p.file AS file_id, p.pos, p.row, "
             "p.crop_x0, p.crop_y0, p.crop_x1, p.crop_y1, p.flip, p.packed, p.offset, p.length",
    "text": "p.key, f.path AS file, p.text, p.embedding, p.truncated, s.uri AS source, p.source_id, p.file AS file_id, p.pos, p.row",
}


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


@dataclass(frozen=True)
class TeacherInfo:
    arch: str
    pretrained: str
    fingerprint: str
    embed_dim: int
    image_size: int
    context_length: int
    preprocess: dict
    config: dict



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
        import duckdb

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
        deadline = time.monotonic() + wait
        try:
            while True:
                try:
                    if read_only:
                        self.con = duckdb.connect(str(self.path), read_only=True)
                    else:
                        self.con = duckdb.connect(str(self.path), config={"storage_compatibility_version": STORAGE_VERSION})
                    break
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
        self.con.execute(f"SET file_search_path = '{_sql_string(str(self.path.parent))}'")
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
                self.set_meta("cache_dir", _relative_if_inside(cdir.resolve(), self.path.parent))
            elif cache_dir and Path(cache_dir).resolve() != self.cache_dir:
                raise DimefmError(f"manifest {path} keeps its shards in {self.cache_dir}, not {cache_dir}")
            self.con.execute("UPDATE runs SET status = 'interrupted', ended_at = ? WHERE status = 'running'", [now()])
        elif self.meta("schema_version") is None:
            raise DimefmError(f"{path} is not a dimefm manifest (no schema_version)")

    # ----------------------------------------------------------------------------- basics
    def close(self) -> None:
        self.con.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def meta(self, name: str) -> str | None:
        try:
            row = _first(self.con.execute("SELECT value FROM meta WHERE name = ?", [name]))
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

        The views name their shards relative to the manifest's folder, and DuckDB checks the path as
        written: the relative form of the cache folder is allowed too, so queries must run with the
        manifest's folder as working directory (`report.run_sql` does), where it means the cache."""
        if not self.read_only:
            raise RuntimeError("lock_down is for read-only connections")
        allowed = [f"{self.cache_dir}/"]
        rel = _relative_if_inside(self.cache_dir, self.path.parent)
        if not os.path.isabs(rel):
            allowed.append(f"{rel}/")
        listing = ", ".join(f"'{_sql_string(a)}'" for a in allowed)
        self.con.execute(f"SET allowed_directories = [{listing}]")
        self.con.execute("SET enable_external_access = false")
        self.con.execute("SET lock_configuration = true")

    def query(self, sql: str, params=None):
        return self.con.execute(sql, params or [])

    # ----------------------------------------------------------------------------- teacher
    def teacher(self) -> TeacherInfo | None:
        row = _first(self.con.execute(
            "SELECT arch, pretrained, fingerprint, embed_dim, image_size, context_length, preprocess, config FROM teachers"
        ))
        if row is None:
            return None
        return TeacherInfo(row[0], row[1], row[2], row[3], row[4], row[5], json.loads(row[6]), json.loads(row[7]))

    def check_views(self, views: int, augment: str, seed: int) -> None:
        """Record the cache's views per image, or refuse another setting: every image has as many."""
        current = self.meta("views")
        wanted = json.dumps({"views": views, "augment": augment if views > 1 else None, "seed": seed if views > 1 else None})
        if current is None:
            if self.con.execute("SELECT count(*) FROM items WHERE modality = 'image'").fetchall()[0][0]:
                current = json.dumps({"views": 1, "augment": None, "seed": None})  # images cached before views existed
            else:
                self.set_meta("views", wanted)
                return
        if current != wanted:
            raise DimefmError(f"{self.path.name} caches images with views {current}, not {wanted}: every image of a "
                              "cache has the same views; use a new --cache")

    @property
    def views(self) -> int:
        """Embedding rows per cached image (1 unless encoded with --views)."""
        v = self.meta("views")
        return json.loads(v)["views"] if v else 1

    def check_teacher(self, info: TeacherInfo) -> None:
        """Record the teacher of a new manifest, or refuse a different one."""
        current = self.teacher()
        if current is None:
            self.con.execute(
                "INSERT INTO teachers VALUES (1, ?, ?, ?, ?, ?, ?, ?, true, 'float16', ?, ?)",
                [info.arch, info.pretrained, info.fingerprint, info.embed_dim, info.image_size,
                 info.context_length, json.dumps(info.preprocess), json.dumps(info.config), now()],
            )
            return
        if (current.fingerprint, current.embed_dim) != (info.fingerprint, info.embed_dim) or current.preprocess != info.preprocess:
            raise DimefmError(
                f"manifest {self.path.name} holds embeddings of teacher {current.arch} ({current.pretrained}, "
                f"weights {current.fingerprint[:12]}), not of {info.arch} ({info.pretrained}, weights "
                f"{info.fingerprint[:12]}): use a new --cache for another teacher"
            )

    # ----------------------------------------------------------------------------- runs
    def start_run(self, kind: str, command: str, config: dict, world_size: int = 1) -> int:
        run_id = _first(self.con.execute("SELECT coalesce(max(run_id), 0) + 1 FROM runs"))[0]
        self.con.execute(
            "INSERT INTO runs VALUES (?, ?, ?, ?, ?, ?, ?, NULL, 'running', NULL, NULL)",
            [run_id, kind, command, json.dumps(config, default=str), json.dumps(versions()), world_size, now()],
        )
        return run_id

    def end_run(self, run_id: int, status: str, *, output: str | None = None, metrics: dict | None = None) -> None:
        self.con.execute(
            "UPDATE runs SET status = ?, ended_at = ?, output = coalesce(?, output), metrics = coalesce(?, metrics) WHERE run_id = ?",
            [status, now(), output, json.dumps(metrics) if metrics is not None else None, run_id],
        )

    # ----------------------------------------------------------------------------- sources
    def register_source(self, spec, plan, shard_size: int, run_id: int) -> tuple[int, bool]:
        """Return (source_id, is_new). A known source must hold the same files (names and sizes);
        files whose timestamps moved are checked by content against what was cached from them."""
        import pyarrow as pa

        row = _first(self.con.execute(
            "SELECT source_id, fingerprint, options, shard_size FROM sources WHERE modality = ? AND uri = ?",
            [spec.modality, spec.uri],
        ))
        if row is not None:
            if row[1] != plan.fingerprint:
                raise DimefmError(f"source {spec.uri} changed since it was cached (files added, removed or resized): use a new --cache")
            if json.loads(row[2]) != spec.options:
                raise DimefmError(f"source {spec.uri} was cached with options {row[2]}, not {json.dumps(spec.options)}")
            self._recheck_touched(row[0], spec, plan)
            return row[0], False
        source_id = _first(self.con.execute("SELECT coalesce(max(source_id), 0) + 1 FROM sources"))[0]
        self.con.execute(
            "INSERT INTO sources VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 0, ?)",
            [source_id, spec.modality, spec.uri, spec.fmt, plan.fingerprint, json.dumps(spec.options),
             len(plan.files), shard_size, len(plan.units), plan.duplicates, now(), run_id, spec.root,
             json.dumps(plan.other_files)],
        )
        if plan.problems:
            self.con.executemany("INSERT INTO errors VALUES (?, ?, 'list', ?, ?, ?, NULL)",
                                 [[source_id, key, reason, run_id, now()] for key, reason in plan.problems])
        files = pa.table({
            "source_id": pa.array([source_id] * len(plan.files), pa.int32()),
            "file_id": pa.array(range(len(plan.files)), pa.int32()),
            "path": pa.array([e.path for e in plan.files], pa.string()),
            "size": pa.array([e.size for e in plan.files], pa.int64()),
            "mtime_ns": pa.array([e.mtime_ns for e in plan.files], pa.int64()),
        })
        self.con.register("_files", files)
        self.con.execute("INSERT INTO source_files SELECT * FROM _files")
        self.con.unregister("_files")
        return source_id, True

    def _recheck_touched(self, source_id: int, spec, plan) -> None:
        """Files with a new timestamp but the same name and size: compare what was cached from them
        with their bytes now; the same content is accepted (and the new timestamp recorded)."""
        from dimefm_pipeline.store.source_check import check_items

        stored = self.con.execute("SELECT file_id, mtime_ns FROM source_files WHERE source_id = ? ORDER BY file_id",
                                  [source_id]).fetchall()
        touched = [fid for (fid, mtime), e in zip(stored, plan.files) if mtime != e.mtime_ns]
        if not touched:
            return
        bad = check_items(self, source_id, spec.root, files=touched, units=plan.units)
        if bad:
            raise DimefmError(f"source {spec.uri}: {bad[0]} ({len(bad)} item(s) differ from what was cached): use a new --cache")
        self.con.executemany("UPDATE source_files SET mtime_ns = ? WHERE source_id = ? AND file_id = ?",
                             [[plan.files[f].mtime_ns, source_id, f] for f in touched])

    def check_overlap(self, new: list) -> None:
        """Refuse new sources that share a file with each other or with a source already cached: its
        items would be cached, and trained on, twice. `new`: (spec, plan) of sources not yet registered."""
        import pyarrow as pa

        paths, owners = [], []
        for i, (spec, plan) in enumerate(new):
            paths.extend(os.path.join(spec.root, e.path) for e in plan.files)
            owners.extend([i] * len(plan.files))
        if not paths:
            return
        self.con.register("_new_files", pa.table({"path": pa.array(paths, pa.string()), "owner": pa.array(owners, pa.int32())}))
        try:
            twice = self.con.execute("SELECT path, min(owner), max(owner) FROM _new_files GROUP BY path "
                                     "HAVING count(DISTINCT owner) > 1 LIMIT 1").fetchall()
            if twice:
                a, b = new[twice[0][1]][0].uri, new[twice[0][2]][0].uri
                raise DimefmError(f"{twice[0][0]} belongs to two sources of this command ({a} and {b}): give it once")
            cached = self.con.execute(
                "SELECT n.path, n.owner, s.source_id, s.uri FROM _new_files n JOIN source_files f "
                "ON n.path = (SELECT root FROM sources WHERE source_id = f.source_id) || '/' || f.path "
                "JOIN sources s ON s.source_id = f.source_id LIMIT 1").fetchall()
        finally:
            self.con.unregister("_new_files")
        if cached:
            path, owner, sid, uri = cached[0]
            raise DimefmError(f"{path} of {new[owner][0].uri} is already cached as part of source {sid} ({uri}): "
                              "encode only what is new")

    def source_row(self, modality: str, uri: str):
        return _first(self.con.execute(
            "SELECT source_id, shard_size FROM sources WHERE modality = ? AND uri = ?", [modality, uri]
        ))

    def completed_units(self, source_id: int) -> set[int]:
        rows = self.con.execute("SELECT unit FROM units WHERE source = ? AND state = 'complete'", [source_id]).fetchall()
        return {r[0] for r in rows}

    def count_repeated_keys(self) -> None:
        """Per source: items whose key an earlier item of the same source already had."""
        self.con.execute(
            "UPDATE sources SET repeated_keys = r.n FROM (SELECT source, count(key) - count(DISTINCT key) AS n "
            "FROM items GROUP BY source) r WHERE sources.source_id = r.source"
        )

    def source_files(self, source_id: int):
        """The file table of a source as an Arrow table (file_id order): path, size, mtime_ns."""
        rel = self.con.sql("SELECT path, size, mtime_ns FROM source_files WHERE source_id = $1 ORDER BY file_id",
                           params=[source_id])
        # the Arrow method's name changed between DuckDB releases
        return rel.to_arrow_table() if hasattr(rel, "to_arrow_table") else rel.arrow()

    def text_hashes(self):
        """Content hashes of every sentence already cached, as a `SeenHashes` (exact-duplicate skipping)."""
        from dimefm_pipeline.formats.planner import SeenHashes

        rows = self.con.execute("SELECT text_hash FROM items WHERE modality = 'text' AND text_hash IS NOT NULL").fetchnumpy()
        return SeenHashes(rows["text_hash"])

    # ----------------------------------------------------------------------------- commits
    def ingest(self, commit, run_id: int) -> bool:
        """Add one finished unit (its shards, items and errors) in one transaction.

        Returns False when the unit was already committed (a marker left by a crash after commit).
        """
        if commit.unit in self.completed_units(commit.source_id):
            return False
        cache_dir = self.cache_dir
        for s in commit.shards:
            for ext in (".npy", ".parquet") + ((".loc.npy",) if s.loc_checksum else ()):
                if not (cache_dir / f"{s.name}{ext}").exists():
                    raise DimefmError(f"commit of unit {commit.source_id}/{commit.unit} names a missing file {s.name}{ext}")
        if commit.pack and not (cache_dir / commit.pack).exists():
            raise DimefmError(f"commit of unit {commit.source_id}/{commit.unit} names a missing file {commit.pack}")
        con = self.con
        con.execute("BEGIN TRANSACTION")
        try:
            for s in commit.shards:
                shard_id = _first(con.execute("SELECT coalesce(max(shard_id), 0) + 1 FROM shards"))[0]
                con.execute(
                    "INSERT INTO shards VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 'complete', ?, ?, ?, ?, ?)",
                    [shard_id, commit.source_id, commit.unit, s.part, commit.modality, f"{s.name}.npy",
                     f"{s.name}.parquet", s.rows, s.dim, s.dtype, s.checksum, s.parquet_checksum, s.bytes, now(),
                     f"{s.name}.loc.npy" if s.loc_checksum else None, s.loc_checksum or None, s.sample or None,
                     s.loc_sample or None],
                )
                hash_col, view_col = ("text_hash", "NULL") if commit.modality == "text" else ("NULL", "view")
                con.execute(
                    f"INSERT INTO items SELECT nextval('item_seq'), ?, source_id, key, ?, row, {hash_col}, file, pos, {view_col} "
                    "FROM read_parquet(?) ORDER BY row",
                    [commit.modality, shard_id, str(cache_dir / f"{s.name}.parquet")],
                )
            if commit.errors:
                con.executemany(
                    "INSERT INTO errors VALUES (?, ?, 'encode', ?, ?, ?, ?)",
                    [[commit.source_id, k, r, run_id, now(), f] for k, r, f in commit.errors],
                )
            con.execute(
                "INSERT INTO units VALUES (?, ?, 'complete', ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [commit.source_id, commit.unit, commit.items, len(commit.errors), commit.duplicates,
                 commit.truncated, commit.rank, run_id, now(), commit.pack, commit.pack_checksum or None, commit.pack_bytes,
                 commit.pack_sample or None],
            )
            con.execute("COMMIT")
        except BaseException:
            con.execute("ROLLBACK")
            raise
        return True

    # ----------------------------------------------------------------------------- views
    def shard_files(self, modality: str) -> list[tuple]:
        """(npy path, parquet path, rows, checksum, sampled checksum) of complete shards, in shard order."""
        rows = self.con.execute(
            "SELECT path, parquet_path, rows, checksum, sample FROM shards WHERE modality = ? AND state = 'complete' "
            "ORDER BY shard_id", [modality],
        ).fetchall()
        base = self.cache_dir
        return [(base / r[0], base / r[1], r[2], r[3], r[4]) for r in rows]

    def refresh_views(self) -> None:
        """(Re)create `image_embeddings` / `text_embeddings` over the current shards, their files named
        relative to the manifest's folder (absolute when the cache lives elsewhere)."""
        import duckdb

        for modality, cols in VIEW_COLUMNS.items():
            files = [_relative_if_inside(Path(f[1]), self.path.parent) for f in self.shard_files(modality)]
            name = f"{modality}_embeddings"
            if files:
                listing = ", ".join("'" + _sql_string(f) + "'" for f in files)
                sql = (f"SELECT {cols} FROM read_parquet([{listing}]) p JOIN sources s ON p.source_id = s.source_id "
                       "LEFT JOIN source_files f ON f.source_id = p.source_id AND f.file_id = p.file")
            else:
                empty = ("NULL::VARCHAR AS key, NULL::VARCHAR AS file, NULL::FLOAT[] AS embedding, NULL::VARCHAR AS source, "
                         "NULL::INTEGER AS source_id, NULL::INTEGER AS file_id, NULL::BIGINT AS pos, NULL::INTEGER AS row")
                if modality == "text":
                    empty += ", NULL::VARCHAR AS text, NULL::BOOLEAN AS truncated"
                else:
                    empty += (", NULL::SMALLINT AS view, NULL::INTEGER AS crop_x0, NULL::INTEGER AS crop_y0, "
                              "NULL::INTEGER AS crop_x1, NULL::INTEGER AS crop_y1, NULL::BOOLEAN AS flip, "
                              "NULL::BOOLEAN AS packed, NULL::BIGINT AS offset, NULL::BIGINT AS length")
                sql = f"SELECT {empty} WHERE false"
            try:
                self.con.execute(f"CREATE OR REPLACE VIEW {name} AS {sql}")
            except duckdb.Error as exc:
                raise DimefmError(f"cannot build the SQL view {name}: {str(exc).splitlines()[0]} "
                                  f"(dimefm info --cache {self.path} --verify lists what is missing)") from None


def _first(result):
    """First row of a result, fetched completely (DuckDB refuses new work while a result is half read)."""
    rows = result.fetchall()
    return rows[0] if rows else None


def _sql_string(text: str) -> str:
    return text.replace("'", "''")


def _relative_if_inside(path: Path, base: Path) -> str:
    try:
        return os.path.relpath(path, base) if path.is_relative_to(base) else str(path)
    except ValueError:
        return str(path)
