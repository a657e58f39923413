"""Minings and their pseudo pairs: a mining is started (or a killed one with the same settings
resumed), and its pairs enter `pseudo_pairs` in one transaction when every block is done."""

from __future__ import annotations

from typing import Callable, Iterable

from dimefm_pipeline.core.errors import DimefmError
from dimefm_pipeline.core.locks import is_held
from dimefm_pipeline.store.manifest.catalog import end_run, held_here, resume_run, start_run
from dimefm_pipeline.store.manifest.connection import Manifest, now, run_lock_path


def start_mining(man: Manifest, k: int, index_type: str, n_images: int, n_texts: int, image_block: int, command: str,
                 world: int) -> tuple[int, int]:
    """(mining id, run id): the latest unfinished mining with the same settings, or a new one."""
    row = man.query("SELECT mining_id, run_id FROM minings WHERE state = 'running' AND k = ? AND index_type = ? "
                    "AND images = ? AND texts = ? AND image_block = ? ORDER BY mining_id DESC LIMIT 1",
                    [k, index_type, n_images, n_texts, image_block]).fetchall()
    if row:
        mining_id, run_id = row[0]
        path = run_lock_path(man.cache_dir, run_id)
        if is_held(path) and not held_here(path):
            raise DimefmError(f"mining {mining_id} of {man.path.name} is running in another process: one mining at a time")
        resume_run(man, run_id)
        return mining_id, run_id
    run_id = start_run(man, "mine", command, {"k": k, "index": index_type, "image_block": image_block}, world)
    mining_id = man.query("SELECT coalesce(max(mining_id), 0) + 1 FROM minings").fetchall()[0][0]
    man.query("INSERT INTO minings VALUES (?, ?, ?, ?, ?, ?, ?, 'running', ?)",
              [mining_id, run_id, k, index_type, n_images, n_texts, now(), image_block])
    return mining_id, run_id


def complete_mining(man: Manifest, mining_id: int, run_id: int, tables: Iterable, metrics: Callable[[], dict]) -> None:
    """In one transaction: the mining's pairs replaced by `tables` (Arrow tables with the columns of
    `pseudo_pairs`, consumed as they come), the mining complete and its run ended with `metrics()`."""
    man.con.execute("BEGIN TRANSACTION")
    man.query("DELETE FROM pseudo_pairs WHERE mining_id = ?", [mining_id])
    for table in tables:
        man.con.register("_pairs", table)
        man.query("INSERT INTO pseudo_pairs SELECT * FROM _pairs")
        man.con.unregister("_pairs")
    man.query("UPDATE minings SET state = 'complete' WHERE mining_id = ?", [mining_id])
    end_run(man, run_id, "complete", metrics=metrics())
    man.con.execute("COMMIT")
