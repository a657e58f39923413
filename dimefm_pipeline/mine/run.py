"""`dimefm mine`: top-k cached sentences of every cached image by teacher cosine similarity.

Exact by default, at any size, with no index: images in blocks of `image_block` rows, each searched
against every sentence block (`search.exact_topk`). Under torchrun, rank r takes image blocks
r, r + world, ...; each finished block is written to `CACHE/minings/ID/block-BBBBBB.npz` before the
next starts, so a killed mining resumes where it stopped (`dimefm mine` again with the same k and
engine). Rank 0 moves the blocks into the manifest's `pseudo_pairs` table when every block is done.
"""

from __future__ import annotations

import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from dimefm_pipeline.core import distributed as dist
from dimefm_pipeline.core.errors import DimefmError
from dimefm_pipeline.mine.config import MineConfig
from dimefm_pipeline.store.manifest import Manifest, lock_wait
from dimefm_pipeline.store.manifest.mining import complete_mining, start_mining



@dataclass
class MineSummary:
    mining_id: int
    images: int
    texts: int
    k: int
    index_type: str
    seconds: float
    mean_top1: float
    blocks_resumed: int = 0


def mine_cache(cfg: MineConfig, *, command: str = "", progress: bool = True) -> MineSummary | None:
    """Mine pseudo pairs over a whole cache into the manifest's `pseudo_pairs` (returns on rank 0)."""
    if cfg.engine == "ivf":
        from dimefm_pipeline.mine.ivf import require_faiss

        require_faiss()  # before the cache is read
    rank, world, _, _ = dist.init_distributed()
    try:
        return _mine(cfg.cache, cfg.k, cfg.engine, cfg.nprobe, cfg.use_gpu, cfg.image_block, cfg.text_block, command,
                     progress, rank, world)
    finally:
        dist.destroy()


def _mine(cache, k, engine, nprobe, use_gpu, image_block, text_block, command, progress, rank, world):
    from dimefm_pipeline.store.cache import load_cache
    from dimefm_pipeline.core.progress import progress_bar

    idx = load_cache(cache, need_images=True, need_texts=True)
    views = idx.views  # pairs are mined for each image's view 0 (global row j * views)
    n, k = len(idx.images) // views, min(k, len(idx.texts))
    search, index_type = _search(idx, k, engine, nprobe, use_gpu, text_block)
    started = None
    if rank == 0:
        started = _start(cache, k, index_type, n, len(idx.texts), image_block, command, world)
    mining_id, run_id, folder = dist.broadcast_object(started)
    folder = Path(folder)
    blocks = list(range(rank, -(-n // image_block), world))
    resumed = sum((folder / f"block-{b:06d}.npz").exists() for b in blocks)
    t0 = time.time()
    with progress_bar(progress and rank == 0) as bar:
        task = bar.add_task("mine pseudo pairs (images)", total=n // world, items=0, rate=0.0)
        done = 0
        for b in blocks:
            path = folder / f"block-{b:06d}.npz"
            lo, hi = b * image_block, min((b + 1) * image_block, n)
            if not path.exists():
                scores, found = search(idx.images.take(np.arange(lo, hi) * views))
                _write_block(path, scores, found)
            done += hi - lo
            bar.update(task, completed=done, items=done, rate=done / max(time.time() - t0, 1e-9))
    dist.barrier()
    if rank != 0:
        return None
    top1 = _finish(cache, idx, mining_id, run_id, folder, image_block, k, time.time() - t0)
    return MineSummary(mining_id, n, len(idx.texts), k, index_type, time.time() - t0, top1, resumed)


def _search(idx, k: int, engine: str, nprobe, use_gpu, text_block):
    """A function image rows -> (scores [b, k], sentence rows [b, k]), and its name."""
    from dimefm_pipeline.mine import ivf, search

    if engine == "ivf":
        index = ivf.build_text_index(idx.texts, exact_threshold=0, nprobe=nprobe, use_gpu=use_gpu)

        def approximate(queries):
            _, scores, found = next(ivf.iter_mine_topk(queries, index, k, batch_size=len(queries)))
            return scores, found

        return approximate, type(index).__name__
    device = _device(use_gpu)
    import torch

    if device == "cpu":  # float32 products: 2.6-3.4x faster than faiss.knn on one core (docs/benchmarks.md)
        blocks = search.SentenceBlocks(idx.texts, block=text_block or search.TEXT_BLOCK, dtype=torch.float32)
        return (lambda queries: search.exact_topk(queries, blocks, k)), "exact (torch fp32, cpu)"

    free, _ = torch.cuda.mem_get_info()
    # the sentences stay on the GPU in fp16 when they fit (43.6 GB at 28.4M x 768 fits one 80 GB GPU)
    blocks = search.SentenceBlocks(idx.texts, block=text_block or 4 * search.TEXT_BLOCK, device=device,
                                   dtype=torch.float16, resident_bytes=int(0.7 * free))
    return (lambda queries: search.exact_topk(queries, blocks, k)), "exact (torch fp16 + fp32 re-scoring, cuda)"


def _device(use_gpu: bool | None) -> str:
    import torch

    if use_gpu and not torch.cuda.is_available():
        raise DimefmError("--gpu was requested but torch sees no CUDA device")
    return "cuda" if (use_gpu is not False and torch.cuda.is_available()) else "cpu"


def _start(cache, k, index_type, n_images, n_texts, image_block, command, world):
    """Rank 0: resume the latest unfinished mining with the same settings, or start a new one."""
    with Manifest(cache, wait=lock_wait()) as man:
        mining_id, run_id = start_mining(man, k, index_type, n_images, n_texts, image_block, command, world)
        folder = man.cache_dir / "minings" / str(mining_id)
    folder.mkdir(parents=True, exist_ok=True)
    return mining_id, run_id, str(folder)


def _write_block(path: Path, scores: np.ndarray, found: np.ndarray) -> None:
    import io

    from dimefm_pipeline.store.files import write_durable

    buf = io.BytesIO()
    np.savez(buf, scores=scores.astype(np.float32), texts=found.astype(np.int32))
    write_durable(path, buf.getvalue())


def _finish(cache, idx, mining_id, run_id, folder: Path, image_block: int, k: int, seconds: float) -> float:
    """Rank 0: every block into `pseudo_pairs` in one transaction, the mining marked complete."""
    import pyarrow as pa

    views = idx.views
    n_blocks = -(-(len(idx.image_item_ids) // views) // image_block)
    top1 = {"sum": 0.0, "n": 0}

    def tables():
        for b in range(n_blocks):
            with np.load(folder / f"block-{b:06d}.npz") as z:
                scores, found = z["scores"], z["texts"].astype(np.int64)
            rows = np.arange(b * image_block, b * image_block + len(scores))
            ok = found >= 0
            top1["sum"] += float(scores[:, 0].sum())
            top1["n"] += len(scores)
            yield pa.table({
                "mining_id": np.full(int(ok.sum()), mining_id, np.int32),
                "image_item": np.repeat(idx.image_item_ids[rows * views], k)[ok.ravel()],
                "rank": np.tile(np.arange(k, dtype=np.int32), len(rows))[ok.ravel()],
                "text_item": idx.text_item_ids[found[ok]],
                "score": scores[ok].astype(np.float32),
            })

    def metrics():
        return {"mining_id": mining_id, "images": top1["n"], "k": k, "seconds": seconds,
                "mean_top1": top1["sum"] / max(top1["n"], 1)}

    with Manifest(cache, wait=lock_wait()) as man:
        complete_mining(man, mining_id, run_id, tables(), metrics)
    shutil.rmtree(folder, ignore_errors=True)
    return top1["sum"] / max(top1["n"], 1)
