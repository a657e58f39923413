"""An added teacher's companion shards: for each of the cache's shards, the same rows in the same
order as that teacher embeds them (`.npy` for stage two, `.parquet` for SQL), each announced by a
commit marker that the next `dimefm encode teacher` with that teacher commits."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np

from dimefm_pipeline.store.files import npy_bytes, sample_digest, write_durable
from dimefm_pipeline.store.shards import COMMITS_DIR


def companion_dir(teacher_id: int) -> str:
    """An added teacher's folder in the cache (its companion shards and their commit markers)."""
    return f"teachers/{teacher_id:03d}"


def write_companion(cache_dir: Path, teacher_id: int, shard_id: int, modality: str, emb: np.ndarray, item_ids) -> dict:
    """An added teacher's rows of shard `shard_id`: `.npy` (memory-mapped in stage two) and `.parquet`
    (SQL: teacher_id, modality, item_id, shard, row, embedding as a float16 list), then the commit
    marker that describes them; returns the marker."""
    import pyarrow as pa

    folder = Path(cache_dir) / companion_dir(teacher_id)
    (folder / COMMITS_DIR).mkdir(parents=True, exist_ok=True)
    n, dim = emb.shape
    flat = pa.array(np.ascontiguousarray(emb).reshape(-1), type=pa.float16())
    table = pa.table({"teacher_id": pa.array(np.full(n, teacher_id, np.int32)), "modality": pa.array([modality] * n),
                      "item_id": pa.array(np.asarray(item_ids, np.int64)), "shard": pa.array(np.full(n, shard_id, np.int32)),
                      "row": pa.array(np.arange(n, dtype=np.int32)),
                      "embedding": pa.ListArray.from_arrays(pa.array(np.arange(0, n * dim + 1, dim, dtype=np.int32)), flat)})
    npy, parquet = npy_bytes(emb), _parquet(table)
    stem = f"{companion_dir(teacher_id)}/{shard_id:07d}"
    write_durable(Path(cache_dir) / f"{stem}.npy", npy)
    write_durable(Path(cache_dir) / f"{stem}.parquet", parquet)
    marker = {"shard_id": shard_id, "path": f"{stem}.npy", "parquet_path": f"{stem}.parquet", "rows": n, "dim": dim,
              "checksum": hashlib.sha256(npy).hexdigest(), "parquet_checksum": hashlib.sha256(parquet).hexdigest(),
              "sample": sample_digest(npy), "bytes": len(npy) + len(parquet)}
    write_durable(folder / COMMITS_DIR / f"{shard_id:07d}.json", json.dumps(marker).encode())
    return marker


def _parquet(table) -> bytes:
    import io

    import pyarrow.parquet as pq

    buf = io.BytesIO()
    pq.write_table(table, buf)
    return buf.getvalue()


def companion_markers(cache_dir: Path, teacher_id: int) -> list[tuple[Path, dict]]:
    """(path, marker) of an added teacher's finished companions not yet committed."""
    folder = Path(cache_dir) / companion_dir(teacher_id) / COMMITS_DIR
    return [(p, json.loads(p.read_text())) for p in sorted(folder.glob("*.json"))] if folder.exists() else []


def remove_partial_companions(cache_dir: Path, teacher_id: int) -> None:
    """Delete an added teacher's half-written files (a killed run's temporary names)."""
    for p in (Path(cache_dir) / companion_dir(teacher_id)).glob("*.tmp"):
        p.unlink(missing_ok=True)
