"""Every query of docs/sql-cookbook.md runs in plain DuckDB against a real manifest."""

from __future__ import annotations

import re
from pathlib import Path

import duckdb

DOC = Path(__file__).resolve().parents[2] / "docs" / "sql-cookbook.md"


def test_every_cookbook_query_runs_in_plain_duckdb(tiny_cache, tmp_path, monkeypatch):
    import shutil

    from dimefm_pipeline.distill.config import DistillConfig
    from dimefm_pipeline.distill.train import distill
    from dimefm_pipeline.encode.teachers import AddTeacherConfig, add_teacher
    from tests.conftest import B_CONFIG, write_tiny_teacher

    shutil.copytree(tiny_cache[0].parent, tmp_path / "m")
    cache, student = tmp_path / "m" / tiny_cache[0].name, tiny_cache[1]
    second = write_tiny_teacher(tmp_path / "t2", "second", seed=4, config=B_CONFIG)
    add_teacher(AddTeacherConfig(str(cache), str(second[0]), str(second[1])), progress=False)
    distill(DistillConfig(cache=str(cache), out=str(tmp_path / "s"), student=str(student), batch_size=8, steps=2,
                          workers=0, augment="none", log_every=1), progress=False)
    queries = re.findall(r"```sql\n(.*?)```", DOC.read_text(), flags=re.S)
    assert len(queries) >= 5
    monkeypatch.chdir(tmp_path)  # as the doc says: from anywhere
    con = duckdb.connect(str(cache), read_only=True)
    results = {}
    for q in queries:
        q = q.replace("/tmp/image_embeddings.parquet", str(tmp_path / "export.parquet"))
        results[q.split("\n")[0]] = con.execute(q).fetchall()
    con.close()
    may_be_empty = ("COPY", "SELECT source, key, length", "SELECT s.uri, e.reason", "SELECT s.uri, i.key",
                    "SELECT run_id, modality, folder", "SELECT t.name, i.modality")  # no errors, truncations,
    # repeats, imports, items without a teacher
    empty = [q for q, rows in results.items() if not rows and not q.startswith(may_be_empty)]
    assert not empty
    assert duckdb.sql(f"SELECT count(*) FROM '{tmp_path / 'export.parquet'}'").fetchall()[0][0] == 64
