"""`dimefm mine`: top-k cached sentences of every cached image by teacher cosine similarity."""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np


@dataclass
class MineSummary:
    mining_id: int
    images: int
    texts: int
    k: int
    index_type: str
    seconds: float
    mean_top1: float


def mine_cache(cache: str, k: int = 8, *, exact_threshold: int | None = None, nprobe: int | None = None,
               use_gpu: bool | None = None, batch_size: int = 65536, command: str = "", progress: bool = True) -> MineSummary:
    """Mine pseudo pairs over a whole cache and store them in the manifest's `pseudo_pairs` table."""
    import pyarrow as pa

    from dimefm_pipeline import mining
    from dimefm_pipeline.cache_index import load_cache
    from dimefm_pipeline.manifest import Manifest, now
    from dimefm_pipeline.progress import progress_bar

    idx = load_cache(cache)
    t0 = time.time()
    kw = {} if exact_threshold is None else {"exact_threshold": exact_threshold}
    # both sides stream from the memory-mapped shards in batches; only the faiss index is resident
    index = mining.build_text_index(idx.texts, nprobe=nprobe, use_gpu=use_gpu, batch_size=batch_size, **kw)
    index_type = type(index).__name__
    k = min(k, len(idx.texts))
    with Manifest(cache) as man:
        run_id = man.start_run("mine", command, {"k": k, "index": index_type, "nprobe": nprobe})
        mining_id = man.query("SELECT coalesce(max(mining_id), 0) + 1 FROM minings").fetchall()[0][0]
        top1 = []
        n = len(idx.images)
        with progress_bar(progress) as bar:
            task = bar.add_task("mine pseudo pairs", total=n, items=0, rate=0.0)
            for start in range(0, n, batch_size):
                rows = np.arange(start, min(start + batch_size, n))
                _, scores, found = next(mining.iter_mine_topk(idx.images.take(rows), index, k, batch_size=batch_size))
                ok = found >= 0
                table = pa.table({
                    "mining_id": np.full(ok.sum(), mining_id, np.int32),
                    "image_item": np.repeat(idx.image_item_ids[rows], k)[ok.ravel()],
                    "rank": np.tile(np.arange(k, dtype=np.int32), len(rows))[ok.ravel()],
                    "text_item": idx.text_item_ids[found[ok]],
                    "score": scores[ok].astype(np.float32),
                })
                man.con.register("_pairs", table)
                man.query("INSERT INTO pseudo_pairs SELECT * FROM _pairs")
                man.con.unregister("_pairs")
                top1.append(scores[:, 0])
                bar.update(task, advance=len(rows), items=start + len(rows), rate=(start + len(rows)) / max(time.time() - t0, 1e-9))
        seconds = time.time() - t0
        summary = MineSummary(mining_id, n, len(idx.texts), k, index_type, seconds, float(np.concatenate(top1).mean()) if top1 else 0.0)
        man.query("INSERT INTO minings VALUES (?, ?, ?, ?, ?, ?, ?)", [mining_id, run_id, k, index_type, n, len(idx.texts), now()])
        man.end_run(run_id, "complete", metrics=summary.__dict__)
    return summary


def load_pairs(cache: str, idx, mining_id: int | None = None) -> tuple[np.ndarray, int]:
    """Mined neighbours as global text rows: int32 [n_images, k] (-1 where missing), and the mining id.

    `idx` is the cache's `CacheIndex`; the latest mining is used unless `mining_id` is given.
    """
    from dimefm_pipeline.errors import DimefmError
    from dimefm_pipeline.manifest import Manifest

    with Manifest(cache, read_only=True) as man:
        row = man.query("SELECT max(mining_id) FROM minings").fetchall()[0][0] if mining_id is None else mining_id
        if row is None:
            raise DimefmError(f"{cache} has no mined pseudo pairs: run `dimefm mine --cache {cache}` first")
        k = man.query("SELECT k FROM minings WHERE mining_id = ?", [row]).fetchall()
        if not k:
            raise DimefmError(f"{cache} has no mining {row}")
        pairs = man.query("SELECT image_item, rank, text_item FROM pseudo_pairs WHERE mining_id = ?", [row]).fetchnumpy()
    k = k[0][0]
    img_row = _rows_of(idx.image_item_ids, pairs["image_item"])
    txt_row = _rows_of(idx.text_item_ids, pairs["text_item"])
    out = np.full((len(idx.image_item_ids), k), -1, dtype=np.int32)  # int32: 40M images x k=8 is 1.3 GB
    ok = (img_row >= 0) & (txt_row >= 0)
    out[img_row[ok], pairs["rank"][ok]] = txt_row[ok]
    return out, row


def _rows_of(item_ids: np.ndarray, wanted: np.ndarray) -> np.ndarray:
    """Global row of each wanted item id (-1 if the item is not in the cache)."""
    order = np.argsort(item_ids)
    pos = np.searchsorted(item_ids[order], wanted)
    pos = np.clip(pos, 0, len(order) - 1)
    found = item_ids[order][pos] == wanted
    return np.where(found, order[pos], -1)
