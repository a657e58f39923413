"""More than one teacher in one cache: the cache's own teacher (teacher 1, which wrote its items) and
added teachers, each with companion shards that hold its embeddings of exactly the rows of one of
the cache's shards, in the same order. An item's rows are found by (shard, row) for every teacher,
so the teachers' targets stay aligned by construction, whatever their dimensions."""

from __future__ import annotations

import json
from dataclasses import dataclass

from dimefm_pipeline.core.errors import DimefmError
from dimefm_pipeline.store.manifest.catalog import TeacherInfo, default_name
from dimefm_pipeline.store.manifest.connection import Manifest, first, now

COLUMNS = "teacher_id, arch, pretrained, fingerprint, embed_dim, image_size, context_length, preprocess, config, name"


@dataclass(frozen=True)
class NamedTeacher:
    """A teacher of the cache with its id and name (`--teachers` uses names)."""

    teacher_id: int  # 1: the cache's own teacher
    name: str
    info: TeacherInfo


def _row_teacher(r) -> NamedTeacher:
    info = TeacherInfo(r[1], r[2], r[3], r[4], r[5], r[6], json.loads(r[7]), json.loads(r[8]))
    return NamedTeacher(r[0], r[9] or default_name(r[1], r[2]), info)


def has_companions(man: Manifest) -> bool:
    """Whether the manifest has the tables of added teachers (manifests from before them do not)."""
    return bool(man.query("SELECT count(*) FROM duckdb_tables() WHERE table_name = 'teacher_shards' "
                          "AND database_name = current_database()").fetchall()[0][0])


def all_teachers(man: Manifest) -> list[NamedTeacher]:
    """Every teacher of the cache, its own (id 1) first."""
    has_name = man.query("SELECT count(*) FROM duckdb_columns() WHERE table_name = 'teachers' AND column_name = 'name' "
                         "AND database_name = current_database()").fetchall()[0][0]
    cols = COLUMNS if has_name else COLUMNS.replace(", name", ", NULL")
    return [_row_teacher(r) for r in man.query(f"SELECT {cols} FROM teachers ORDER BY teacher_id").fetchall()]


def record_teacher(man: Manifest, name: str, info: TeacherInfo) -> int:
    """The id of added teacher `name`: recorded now, or found with the same weights (a run resumed).
    Refused: a name taken by other weights, weights already there under another name, and the
    weights of the cache's own teacher (its rows are the cache's)."""
    teachers = all_teachers(man)
    if not teachers:
        raise DimefmError(f"{man.path.name} has no teacher yet: encode images and sentences first, then add teachers")
    for t in teachers:
        same = (t.info.fingerprint, t.info.embed_dim, t.info.preprocess) == (info.fingerprint, info.embed_dim, info.preprocess)
        if t.name == name and not same:
            raise DimefmError(f"{man.path.name} already has a teacher named {name!r} with other weights "
                              f"({t.info.arch}, weights {t.info.fingerprint[:12]}): choose another --name")
        if same:
            if t.teacher_id == 1 or t.name != name:
                own = " (the cache's own)" if t.teacher_id == 1 else ""
                raise DimefmError(f"{man.path.name} already has these weights as teacher {t.name!r}{own}")
            return t.teacher_id
    if teachers[0].teacher_id == 1:  # a manifest from before names: the cache's own teacher gets its default one
        man.con.execute("UPDATE teachers SET name = ? WHERE teacher_id = 1 AND name IS NULL", [teachers[0].name])
    teacher_id = max(t.teacher_id for t in teachers) + 1
    man.con.execute(f"INSERT INTO teachers ({COLUMNS}, normalized, dtype, created_at) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, true, 'float16', ?)",
                    [teacher_id, info.arch, info.pretrained, info.fingerprint, info.embed_dim, info.image_size,
                     info.context_length, json.dumps(info.preprocess), json.dumps(info.config), name, now()])
    return teacher_id


def shards_to_add(man: Manifest, teacher_id: int) -> list[tuple]:
    """(shard id, modality, npy path, rows, first global row of its modality) of the cache's complete
    shards that teacher `teacher_id` has no companion of yet, in shard order."""
    return man.query(
        """SELECT shard_id, modality, path, rows, first_row FROM (
               SELECT shard_id, modality, path, rows,
                      coalesce(sum(rows) OVER (PARTITION BY modality ORDER BY shard_id
                                               ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING), 0) AS first_row
               FROM shards WHERE state = 'complete') s
           WHERE NOT EXISTS (SELECT 1 FROM teacher_shards c WHERE c.shard_id = s.shard_id AND c.teacher_id = ?
                             AND c.state = 'complete')
           ORDER BY shard_id""", [teacher_id]).fetchall()


def record_companion(man: Manifest, teacher_id: int, shard_id: int, c: dict, run_id: int) -> str:
    """Record a written companion shard (`c`: path, parquet_path, rows, dim, checksum,
    parquet_checksum, sample, bytes): "recorded"; "already" if it is (a marker committed twice);
    "stale" if it no longer fits its shard (gone, or of other rows), which is then encoded again."""
    if first(man.con.execute("SELECT 1 FROM teacher_shards WHERE teacher_id = ? AND shard_id = ? AND state = 'complete'",
                             [teacher_id, shard_id])):
        return "already"
    rows = first(man.con.execute("SELECT rows FROM shards WHERE shard_id = ? AND state = 'complete'", [shard_id]))
    if rows is None or rows[0] != c["rows"]:
        return "stale"
    man.con.execute("INSERT INTO teacher_shards VALUES (?, ?, ?, ?, ?, ?, 'float16', ?, ?, ?, ?, 'complete', ?, ?)",
                    [teacher_id, shard_id, c["path"], c["parquet_path"], c["rows"], c["dim"], c["checksum"],
                     c["parquet_checksum"], c["sample"], c["bytes"], run_id, now()])
    return "recorded"


def companion_files(man: Manifest, teacher_id: int, modality: str) -> tuple[list[tuple], int]:
    """(npy path, parquet path, rows, checksum, sample) of teacher `teacher_id`'s companions of the
    cache's complete `modality` shards, in shard order, and how many of those shards have none."""
    rows = man.query(
        """SELECT c.path, c.parquet_path, c.rows, c.checksum, c.sample FROM shards s
           LEFT JOIN teacher_shards c ON c.shard_id = s.shard_id AND c.teacher_id = ? AND c.state = 'complete'
           WHERE s.modality = ? AND s.state = 'complete' ORDER BY s.shard_id""", [teacher_id, modality]).fetchall()
    base = man.cache_dir
    missing = sum(r[0] is None for r in rows)
    return [(base / r[0], base / r[1], r[2], r[3], r[4]) for r in rows if r[0] is not None], missing


def teacher_named(man: Manifest, name: str) -> NamedTeacher:
    """The cache's teacher called `name` (its own or an added one), or a clear error listing them."""
    teachers = all_teachers(man)
    for t in teachers:
        if t.name == name:
            return t
    raise DimefmError(f"{man.path.name} has no teacher named {name!r}; it has: {', '.join(t.name for t in teachers)} "
                      "(dimefm info lists them; dimefm encode teacher adds one)")
