"""What a cache is: its teacher, its views per image, its shard files and SQL views, and the runs that
wrote it (with their metrics, skipped items and token files)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from dimefm_pipeline.core.errors import DimefmError
from dimefm_pipeline.core.locks import hold
from dimefm_pipeline.store.manifest.connection import (Manifest, first, now, relative_if_inside, run_lock_path, sql_string,
                                                       versions)
from dimefm_pipeline.store.manifest.schema import RELATION_COLUMNS


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

    @classmethod
    def of_model(cls, loaded) -> "TeacherInfo":
        """What the manifest records of a built teacher (a `core.models.LoadedModel`)."""
        return cls(loaded.spec.arch, loaded.spec.pretrained, loaded.fingerprint, loaded.embed_dim, loaded.image_size,
                   loaded.context_length, loaded.preprocess_cfg, loaded.spec.config)


# ---------------------------------------------------------------------------------------- teacher
def teacher(man: Manifest) -> TeacherInfo | None:
    row = first(man.con.execute(
        "SELECT arch, pretrained, fingerprint, embed_dim, image_size, context_length, preprocess, config FROM teachers "
        "ORDER BY teacher_id LIMIT 1"
    ))
    if row is None:
        return None
    return TeacherInfo(row[0], row[1], row[2], row[3], row[4], row[5], json.loads(row[6]), json.loads(row[7]))


def default_name(arch: str, pretrained: str) -> str:
    """A teacher's name when none is given: its weights file's stem, or arch-tag."""
    if pretrained and ("/" in pretrained or "\\" in pretrained or Path(pretrained).suffix):
        return Path(pretrained).stem
    return f"{arch}-{pretrained}" if pretrained else arch


def check_teacher(man: Manifest, info: TeacherInfo) -> None:
    """Record the teacher of a new manifest, or refuse a different one."""
    current = teacher(man)
    if current is None:
        man.con.execute(
            "INSERT INTO teachers (teacher_id, arch, pretrained, fingerprint, embed_dim, image_size, context_length, "
            "preprocess, normalized, dtype, config, created_at, name) VALUES (1, ?, ?, ?, ?, ?, ?, ?, true, 'float16', ?, ?, ?)",
            [info.arch, info.pretrained, info.fingerprint, info.embed_dim, info.image_size,
             info.context_length, json.dumps(info.preprocess), json.dumps(info.config), now(),
             default_name(info.arch, info.pretrained)],
        )
        return
    if (current.fingerprint, current.embed_dim) != (info.fingerprint, info.embed_dim) or current.preprocess != info.preprocess:
        raise DimefmError(
            f"manifest {man.path.name} holds embeddings of teacher {current.arch} ({current.pretrained}, "
            f"weights {current.fingerprint[:12]}), not of {info.arch} ({info.pretrained}, weights "
            f"{info.fingerprint[:12]}): use a new --cache for another teacher"
        )


# ---------------------------------------------------------------------------------------- views per image
def check_views(man: Manifest, views: int, augment: str, seed: int) -> None:
    """Record the cache's views per image, or refuse another setting: every image has as many."""
    current = man.meta("views")
    wanted = json.dumps({"views": views, "augment": augment if views > 1 else None, "seed": seed if views > 1 else None})
    if current is None:
        if man.con.execute("SELECT count(*) FROM items WHERE modality = 'image'").fetchall()[0][0]:
            current = json.dumps({"views": 1, "augment": None, "seed": None})  # images with no views record: one each
        else:
            man.set_meta("views", wanted)
            return
    if current != wanted:
        raise DimefmError(f"{man.path.name} caches images with views {current}, not {wanted}: every image of a "
                          "cache has the same views; use a new --cache")


def views_per_image(man: Manifest) -> int:
    """Embedding rows per cached image (1 unless encoded with --views)."""
    v = man.meta("views")
    return json.loads(v)["views"] if v else 1


# ---------------------------------------------------------------------------------------- shards and SQL views
def shard_files(man: Manifest, modality: str) -> list[tuple]:
    """(npy path, parquet path, rows, checksum, sampled checksum) of complete shards, in shard order."""
    rows = man.con.execute(
        "SELECT path, parquet_path, rows, checksum, sample FROM shards WHERE modality = ? AND state = 'complete' "
        "ORDER BY shard_id", [modality],
    ).fetchall()
    base = man.cache_dir
    return [(base / r[0], base / r[1], r[2], r[3], r[4]) for r in rows]


def refresh_relations(man: Manifest, *, temporary: bool = False) -> None:
    """(Re)create the SQL views `image_embeddings` / `text_embeddings` over the current shards
    (`temporary`: as this connection's own views, for a read-only open of a manifest whose stored
    views are of an older layout)."""
    import duckdb

    for modality, cols in RELATION_COLUMNS.items():
        files = [relative_if_inside(Path(f[1]), man.path.parent) for f in shard_files(man, modality)]
        name = f"{modality}_embeddings"
        if files:
            sql = (f"SELECT {cols} FROM read_parquet({_shard_list(man, name, files)}) p "
                   "JOIN sources s ON p.source_id = s.source_id "
                   "LEFT JOIN source_files f ON f.source_id = p.source_id AND f.file_id = p.file")
        else:
            sql = f"SELECT {_empty_columns(modality)} WHERE false"
        try:
            man.con.execute(f"CREATE OR REPLACE {'TEMP ' if temporary else ''}VIEW {name} AS {sql}")
        except duckdb.Error as exc:
            raise DimefmError(f"cannot build the SQL view {name}: {str(exc).splitlines()[0]} "
                              f"(dimefm info --cache {man.path} --verify lists what is missing)") from None
    _teacher_relation(man, temporary)
    if not temporary:
        man.set_meta("relations", relations_layout(man))


def _teacher_relation(man: Manifest, temporary: bool) -> None:
    """`teacher_embeddings`: every added teacher's rows (teacher, modality, item_id, embedding)."""
    import duckdb

    tables = {r[0] for r in man.query("SELECT table_name FROM duckdb_tables() WHERE database_name = current_database()").fetchall()}
    files = [] if "teacher_shards" not in tables else [
        relative_if_inside(man.cache_dir / r[0], man.path.parent) for r in
        man.query("SELECT parquet_path FROM teacher_shards WHERE state = 'complete' ORDER BY teacher_id, shard_id").fetchall()]
    if files:
        sql = (f"SELECT t.name AS teacher, p.modality, p.item_id, p.shard, p.row, p.embedding FROM "
               f"read_parquet({_shard_list(man, 'teacher_embeddings', files)}) p JOIN teachers t USING (teacher_id)")
    else:
        sql = ("SELECT NULL::VARCHAR AS teacher, NULL::VARCHAR AS modality, NULL::BIGINT AS item_id, "
               "NULL::INTEGER AS shard, NULL::INTEGER AS row, NULL::FLOAT[] AS embedding WHERE false")
    try:
        man.con.execute(f"CREATE OR REPLACE {'TEMP ' if temporary else ''}VIEW teacher_embeddings AS {sql}")
    except duckdb.Error as exc:
        raise DimefmError(f"cannot build the SQL view teacher_embeddings: {str(exc).splitlines()[0]} "
                          f"(dimefm info --cache {man.path} --verify lists what is missing)") from None


def relations_layout(man: Manifest) -> str:
    """What the stored SQL views were made for: the layout below and the manifest's file name (a
    renamed manifest gets new views at its next read-write open)."""
    return f"{RELATIONS_LAYOUT}:{man.path.name}"


RELATIONS_LAYOUT = "3"  # shards found beside the manifest through the client's temp_directory; added teachers


def _shard_list(man: Manifest, relation: str, files: list[str]) -> str:
    """The SQL list of a view's Parquet files, found from any working directory.

    A shard inside the manifest's folder is named relative to it, so the folder can be copied or
    moved whole. DuckDB resolves a relative path against the client's working directory, not the
    database's folder, and offers no function that names a database's file; but its default
    `temp_directory` is the opened database's own path plus `.tmp`, as the client gave it. So a
    relative name is prefixed, when the view is read, with the folder part of that setting: the
    manifest's folder in any client that opened the manifest as its database (`duckdb -readonly
    manifests/run1.duckdb`, `duckdb.connect(path)`), from any working directory and whatever
    characters the folder's name holds. A client that attached the manifest, renamed it or changed
    temp_directory gets the relative names (resolved against its working directory and
    `file_search_path`) when it has set a search path, else an error that says what to do.
    Shards kept outside the manifest's folder (`--cache-dir` elsewhere) are named absolutely.
    """
    rel = [f for f in files if not Path(f).is_absolute()]
    absolute = [f for f in files if Path(f).is_absolute()]
    parts = []
    if rel:
        parts.append(f"list_transform({_literals(rel)}, lambda f: {_manifest_folder(man.path.name, relation)} || f)")
    if absolute:
        parts.append(_literals(absolute))
    return parts[0] if len(parts) == 1 else f"list_concat({parts[0]}, {parts[1]})"


def _manifest_folder(name: str, relation: str) -> str:
    """SQL for the manifest's folder as the reading client names it ('' or ending in '/')."""
    tmp = "current_setting('temp_directory')"
    own = sql_string(f"{name}.tmp")
    hint = sql_string(f"{relation} reads Parquet shards named relative to the folder of {name}, found through "
                      "DuckDB's default temp_directory (the opened database's path + .tmp); this connection attached "
                      "the manifest, renamed it or changed temp_directory: open the manifest itself (duckdb -readonly "
                      "PATH), or first SET file_search_path = 'FOLDER OF THE MANIFEST'")
    return (f"(CASE WHEN {tmp} = '{own}' OR suffix({tmp}, '/{own}') THEN regexp_replace({tmp}, '[^/]*$', '') "
            f"WHEN current_setting('file_search_path') <> '' THEN '' ELSE error('{hint}') END)")


def _literals(paths: list[str]) -> str:
    return "[" + ", ".join("'" + sql_string(f) + "'" for f in paths) + "]"


def _empty_columns(modality: str) -> str:
    """The columns of an SQL view over no shard, typed as they are over shards."""
    empty = ("NULL::VARCHAR AS key, NULL::VARCHAR AS file, NULL::FLOAT[] AS embedding, NULL::VARCHAR AS source, "
             "NULL::INTEGER AS source_id, NULL::INTEGER AS file_id, NULL::BIGINT AS pos, NULL::INTEGER AS row")
    if modality == "text":
        return empty + ", NULL::VARCHAR AS text, NULL::BOOLEAN AS truncated"
    return empty + (", NULL::SMALLINT AS view, NULL::INTEGER AS crop_x0, NULL::INTEGER AS crop_y0, "
                    "NULL::INTEGER AS crop_x1, NULL::INTEGER AS crop_y1, NULL::BOOLEAN AS flip, "
                    "NULL::BOOLEAN AS packed, NULL::BIGINT AS offset, NULL::BIGINT AS length")


# ---------------------------------------------------------------------------------------- runs
_held: dict[Path, object] = {}  # lock files of the runs this process started and has not ended


def start_run(man: Manifest, kind: str, command: str, config: dict, world_size: int = 1) -> int:
    """Record a run `running` and hold its lock (`_runs/ID.lock` in the cache folder) until `end_run` or
    the end of this process: while the lock is held nobody marks the run `interrupted`."""
    run_id = first(man.con.execute("SELECT coalesce(max(run_id), 0) + 1 FROM runs"))[0]
    path = run_lock_path(man.cache_dir, run_id)
    _held[path] = hold(path, f"run {run_id} of {man.path.name} is held by another process")
    man.con.execute(
        "INSERT INTO runs VALUES (?, ?, ?, ?, ?, ?, ?, NULL, 'running', NULL, NULL)",
        [run_id, kind, command, json.dumps(config, default=str), json.dumps(versions()), world_size, now()],
    )
    return run_id


def drop_run(man: Manifest, run_id: int) -> None:
    """Forget a run that was refused before it did anything (a user's mistake is not a run)."""
    man.con.execute("DELETE FROM runs WHERE run_id = ?", [run_id])
    _release(man, run_id)


def held_here(path: Path) -> bool:
    """True when this process holds the run lock `path` (a run it started and never ended)."""
    return path in _held


def resume_run(man: Manifest, run_id: int) -> None:
    """A run taken up again by this process (a killed mining resumed): `running` again, its lock held."""
    path = run_lock_path(man.cache_dir, run_id)
    if path in _held:
        _held.pop(path).release()
    _held[path] = hold(path, f"run {run_id} of {man.path.name} is held by another process")
    man.con.execute("UPDATE runs SET status = 'running', ended_at = NULL WHERE run_id = ?", [run_id])


def end_run(man: Manifest, run_id: int, status: str, *, output: str | None = None, metrics: dict | None = None) -> None:
    """Record how a run ended (complete, stopped, interrupted, failed) and drop its lock."""
    man.con.execute(
        "UPDATE runs SET status = ?, ended_at = ?, output = coalesce(?, output), metrics = coalesce(?, metrics) WHERE run_id = ?",
        [status, now(), output, json.dumps(metrics) if metrics is not None else None, run_id],
    )
    _release(man, run_id)


def _release(man: Manifest, run_id: int) -> None:
    """Drop the lock of a run this process started (and its file)."""
    path = run_lock_path(man.cache_dir, run_id)
    lock = _held.pop(path, None)
    if lock is not None:
        path.unlink(missing_ok=True)
        lock.release()


def add_metrics(man: Manifest, rows: list[tuple]) -> None:
    """(run, step, name, value) rows into the long `metrics` table."""
    man.con.executemany("INSERT INTO metrics VALUES (?, ?, ?, ?)", rows)


def add_distill_errors(man: Manifest, rows: list[tuple]) -> None:
    """(reason, run, item id) of images stage two could not read, as `errors` rows of stage `distill`."""
    man.con.executemany("INSERT INTO errors SELECT source, key, 'distill', ?, ?, ?, file FROM items WHERE item_id = ?",
                        [(reason, run_id, now(), item) for reason, run_id, item in rows])


def add_import(man: Manifest, run_id: int, modality: str, folder: str, partitions: int, rows: int, checked: int,
               min_cosine: float) -> None:
    """An `encode --embeddings-from` folder: its rows, and how the teacher agreed with a sample of them
    (which cached rows came from it: `items.imported`)."""
    man.con.execute("INSERT INTO imports VALUES (?, ?, ?, 'clip-retrieval', ?, ?, ?, ?, ?)",
                    [run_id, modality, folder, partitions, rows, checked, min_cosine, now()])


def add_token_files(man: Manifest, rows: list[tuple]) -> None:
    """(tokenizer, text checksum, path, rows, checksum) of token-id files written beside the cache."""
    man.con.executemany("INSERT INTO token_files VALUES (?, ?, ?, ?, ?, ?)", [(*r, now()) for r in rows])
