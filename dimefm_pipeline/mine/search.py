"""The searches of pseudo-pair mining: for image rows, their top-k cached sentences by teacher cosine
similarity (`mine.run` deals image blocks to ranks and stores the result).

Inputs are L2-normalised rows (fp16 or fp32, in memory or memory-mapped). The default is exact and
needs no index (`exact_topk`): a block of images against the sentences, block by block, keeping a
running top-k, so memory is bounded by the block sizes whatever the corpus size (a float32 torch
matrix product on the CPU; on a GPU a half-precision product with the sentences resident on the
device when they fit, its candidates re-scored in float32). faiss's blocked `knn` stays as an engine
for comparison (2.6-3.4x slower on a CPU), and a faiss IVF index (`build_text_index`) for users who
want an approximate index.
"""

from __future__ import annotations

import math
from collections.abc import Iterator

import numpy as np

from dimefm_pipeline.core.errors import DimefmError

EXACT_THRESHOLD = 200_000  # sentences; below this IVF saves little time and loses neighbours (docs/benchmarks.md)
TRAIN_POINTS_PER_LIST = 64  # k-means sample size per IVF list (faiss warns below 39)
GPU_MAX_K = 2048  # faiss GPU indexes support k and nprobe up to this


def default_nlist(n_text: int) -> int:
    """IVF list count for a corpus of `n_text` sentences: about 4 * sqrt(n), and never so many that
    the lists cannot be trained from the corpus itself."""
    return max(1, min(int(4 * math.sqrt(n_text)), n_text // TRAIN_POINTS_PER_LIST))


def default_nprobe(nlist: int) -> int:
    """Lists searched per query: 1/32 of them, at least 32 (all of them for small indexes). Scanning
    a larger share makes IVF slower than the exact BLAS scan while random-like data still loses
    recall (`docs/benchmarks.md`)."""
    return min(nlist, max(32, nlist // 32))


def _gpu_available() -> bool:
    import faiss

    return hasattr(faiss, "StandardGpuResources") and faiss.get_num_gpus() > 0


def _check_matrix(name: str, x: np.ndarray) -> None:
    if x.ndim != 2 or x.shape[0] == 0:
        raise DimefmError(f"{name} must be a non-empty 2-D array, got shape {x.shape}")
    if x.dtype not in (np.float16, np.float32):
        raise DimefmError(f"{name} must be float16 or float32, got {x.dtype}")


def _float32_batches(x: np.ndarray, batch_size: int) -> Iterator[tuple[int, np.ndarray]]:
    for start in range(0, x.shape[0], batch_size):
        yield start, np.ascontiguousarray(x[start : start + batch_size], dtype=np.float32)


def build_text_index(
    text_emb: np.ndarray,
    *,
    exact_threshold: int = EXACT_THRESHOLD,
    nlist: int | None = None,
    nprobe: int | None = None,
    use_gpu: bool | None = None,
    batch_size: int = 65536,
    seed: int = 0,
):
    """A faiss inner-product index over `text_emb` (n_text x d): `IndexFlatIP` when n_text <=
    `exact_threshold`, else `IndexIVFFlat` trained on a seeded sample with `nlist` lists (default
    `default_nlist`) and `nprobe` lists searched (default `default_nprobe`). `use_gpu=None` picks the
    GPU when faiss has GPU support and sees one; `use_gpu=True` without one is an error."""
    import faiss

    _check_matrix("text embeddings", text_emb)
    if use_gpu is None:
        use_gpu = _gpu_available()
    elif use_gpu and not _gpu_available():
        raise DimefmError("use_gpu was requested but faiss has no GPU support or sees no GPU (install faiss-gpu)")
    n_text, dim = text_emb.shape
    res = faiss.StandardGpuResources() if use_gpu else None

    def to_gpu(cpu_index):
        gpu_index = faiss.index_cpu_to_gpu(res, 0, cpu_index)
        gpu_index.referenced_objects = [res]  # the resources must outlive the index
        return gpu_index

    if n_text <= exact_threshold:
        index = faiss.IndexFlatIP(dim)
        return _add_all(to_gpu(index) if use_gpu else index, text_emb, batch_size)

    nlist = default_nlist(n_text) if nlist is None else nlist
    if not 1 <= nlist <= n_text:
        raise DimefmError(f"nlist must be between 1 and the corpus size {n_text}, got {nlist}")
    nprobe = default_nprobe(nlist) if nprobe is None else nprobe
    if not 1 <= nprobe <= nlist:
        raise DimefmError(f"nprobe must be between 1 and nlist={nlist}, got {nprobe}")
    if use_gpu and nprobe > GPU_MAX_K:
        raise DimefmError(f"nprobe {nprobe} exceeds the faiss GPU limit of {GPU_MAX_K}")
    quantizer = faiss.IndexFlatIP(dim)  # the Python wrapper of the IVF index keeps it alive
    index = faiss.IndexIVFFlat(quantizer, dim, nlist, faiss.METRIC_INNER_PRODUCT)
    index.cp.spherical = True  # centroids on the unit sphere, like the data
    index.nprobe = nprobe
    if use_gpu:
        # k-means on the GPU; the trained CPU index is then cloned (nprobe included) before adding
        clustering = to_gpu(faiss.IndexFlatIP(dim))
        index.clustering_index = clustering
    sample_size = min(n_text, nlist * TRAIN_POINTS_PER_LIST)
    sample = np.sort(np.random.default_rng(seed).choice(n_text, size=sample_size, replace=False))
    index.train(np.ascontiguousarray(text_emb[sample], dtype=np.float32))
    if use_gpu:
        index.clustering_index = None
        del clustering
        index = to_gpu(index)
    return _add_all(index, text_emb, batch_size)


def _add_all(index, text_emb: np.ndarray, batch_size: int):
    for _, block in _float32_batches(text_emb, batch_size):
        index.add(block)
    return index


def iter_mine_topk(
    image_emb: np.ndarray,
    index,
    k: int,
    *,
    batch_size: int = 65536,
) -> Iterator[tuple[int, np.ndarray, np.ndarray]]:
    """Search `index` (from `build_text_index`) for the top-k sentences of each image, one image
    batch at a time; yields `(first_image_row, scores float32 [b,k], indices int64 [b,k])` so a
    caller can write results out without holding them all."""
    _check_matrix("image embeddings", image_emb)
    if image_emb.shape[1] != index.d:
        raise DimefmError(f"image embeddings have dim {image_emb.shape[1]} but sentence embeddings have dim {index.d}")
    if not 1 <= k <= index.ntotal:
        raise DimefmError(f"k must be between 1 and the number of sentences ({index.ntotal}), got {k}")
    if k > GPU_MAX_K and type(index).__name__.startswith("Gpu"):
        raise DimefmError(f"k={k} exceeds the faiss GPU limit of {GPU_MAX_K}")
    for start, queries in _float32_batches(image_emb, batch_size):
        scores, indices = index.search(queries, k)
        yield start, scores.astype(np.float32, copy=False), indices.astype(np.int64, copy=False)


def mine_topk(
    image_emb: np.ndarray,
    text_emb: np.ndarray,
    k: int,
    *,
    exact_threshold: int = EXACT_THRESHOLD,
    nlist: int | None = None,
    nprobe: int | None = None,
    use_gpu: bool | None = None,
    batch_size: int = 65536,
) -> tuple[np.ndarray, np.ndarray]:
    """Top-k sentences of every image by cosine similarity of L2-normalised teacher embeddings.

    Returns `(scores float32 [n_images, k], indices int64 [n_images, k])`, best first. Exact up to
    `exact_threshold` sentences, IVF beyond (see `build_text_index`); an IVF search that finds fewer
    than k candidates in its probed lists pads with index -1.
    """
    index = build_text_index(
        text_emb, exact_threshold=exact_threshold, nlist=nlist, nprobe=nprobe, use_gpu=use_gpu, batch_size=batch_size
    )
    scores = np.empty((image_emb.shape[0], k), dtype=np.float32)
    indices = np.empty((image_emb.shape[0], k), dtype=np.int64)
    for start, s, i in iter_mine_topk(image_emb, index, k, batch_size=batch_size):
        scores[start : start + len(s)] = s
        indices[start : start + len(i)] = i
    return scores, indices


def mine_topk_torch(
    image_emb: np.ndarray,
    text_emb: np.ndarray,
    k: int,
    *,
    device: str | None = None,
    image_batch: int = 1024,
    text_block: int = 65536,
) -> tuple[np.ndarray, np.ndarray]:
    """Exact top-k by blocked matmul + topk in torch (reference and benchmark baseline); same
    return contract as `mine_topk`. The sentence matrix is held on `device` in float32; each image
    batch keeps a running top-k over sentence blocks of `text_block` rows."""
    import torch

    _check_matrix("image embeddings", image_emb)
    _check_matrix("text embeddings", text_emb)
    if image_emb.shape[1] != text_emb.shape[1]:
        raise DimefmError(f"image embeddings have dim {image_emb.shape[1]} but sentence embeddings have dim {text_emb.shape[1]}")
    if not 1 <= k <= text_emb.shape[0]:
        raise DimefmError(f"k must be between 1 and the number of sentences ({text_emb.shape[0]}), got {k}")
    dev = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    texts = [torch.from_numpy(block).to(dev) for _, block in _float32_batches(text_emb, text_block)]
    scores = np.empty((image_emb.shape[0], k), dtype=np.float32)
    indices = np.empty((image_emb.shape[0], k), dtype=np.int64)
    with torch.inference_mode():
        for start, queries in _float32_batches(image_emb, image_batch):
            q = torch.from_numpy(queries).to(dev)
            best_s = best_i = None
            offset = 0
            for block in texts:
                s, i = torch.topk(q @ block.T, min(k, block.shape[0]), dim=1)
                i += offset
                offset += block.shape[0]
                if best_s is not None:
                    s, i = torch.cat([best_s, s], dim=1), torch.cat([best_i, i], dim=1)
                    s, pick = torch.topk(s, min(k, s.shape[1]), dim=1)
                    i = torch.gather(i, 1, pick)
                best_s, best_i = s, i
            scores[start : start + len(queries)] = best_s.cpu().numpy()
            indices[start : start + len(queries)] = best_i.cpu().numpy()
    return scores, indices


TEXT_BLOCK = 262_144  # sentences per block of the exact search (CPU): 768 MiB of float32 rows at 768-d
RESCORE_MARGIN = 16  # extra candidates a half-precision product keeps for the float32 re-scoring


class SentenceBlocks:
    """The sentence rows in blocks for the exact search: converted once and kept (on the device, in
    the compute dtype) when they fit in `resident_bytes`, else read from the memory maps per use."""

    def __init__(self, texts, *, block: int = TEXT_BLOCK, device: str = "cpu", dtype=None, resident_bytes: int = 0):
        self.texts, self.block, self.device, self.dtype = texts, block, device, dtype
        self.n, self.dim = texts.shape
        self.starts = list(range(0, self.n, block))
        itemsize = 2 if dtype is not None and "16" in str(dtype) else 4
        self._kept = {} if self.n * self.dim * itemsize <= resident_bytes else None

    def __iter__(self):
        for start in self.starts:
            if self._kept is not None and start in self._kept:
                yield start, self._kept[start]
                continue
            rows = np.ascontiguousarray(self.texts[start : start + self.block], dtype=np.float32)
            if self.dtype is not None:  # a torch engine
                import torch

                rows = torch.from_numpy(rows).to(self.device, self.dtype)
            if self._kept is not None:
                self._kept[start] = rows
            yield start, rows


def exact_topk(queries: np.ndarray, blocks: SentenceBlocks, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The exact top-k sentences (inner product) of each query row: `(scores float32 [b, k], indices
    int64 [b, k])`, best first. A torch product in `blocks.dtype` (float32 on the CPU; half precision on a
    GPU, whose top k + RESCORE_MARGIN candidates are re-scored in float32), or faiss's blocked search
    per sentence block when the blocks have no dtype (kept for comparison: 2.6-3.4x slower on a CPU)."""
    _check_matrix("image embeddings", queries)
    if queries.shape[1] != blocks.dim:
        raise DimefmError(f"image embeddings have dim {queries.shape[1]} but sentence embeddings have dim {blocks.dim}")
    if not 1 <= k <= blocks.n:
        raise DimefmError(f"k must be between 1 and the number of sentences ({blocks.n}), got {k}")
    q32 = np.ascontiguousarray(queries, dtype=np.float32)
    if blocks.dtype is None:
        import faiss

        heap = faiss.ResultHeap(len(q32), k, keep_max=True)
        for start, rows in blocks:
            d, i = faiss.knn(q32, rows, min(k, len(rows)), metric=faiss.METRIC_INNER_PRODUCT)
            if d.shape[1] < k:  # a short last block: pad so the heap sees k columns
                d = np.pad(d, ((0, 0), (0, k - d.shape[1])), constant_values=-np.inf)
                i = np.pad(i, ((0, 0), (0, k - i.shape[1])), constant_values=-1)
            heap.add_result(d, np.where(i >= 0, i + start, -1))
        heap.finalize()
        return heap.D.astype(np.float32), heap.I.astype(np.int64)
    return _torch_topk(q32, blocks, k)


SCORE_TILE = 1 << 28  # similarity entries of fp16 computed at once by the torch engine (512 MiB; half as many in fp32)


def _torch_topk(q32: np.ndarray, blocks: SentenceBlocks, k: int) -> tuple[np.ndarray, np.ndarray]:
    import torch

    scores = np.empty((len(q32), k), dtype=np.float32)
    found = np.empty((len(q32), k), dtype=np.int64)
    itemsize = torch.empty((), dtype=blocks.dtype).element_size()
    step = max(1, SCORE_TILE * 2 // (blocks.block * itemsize))  # queries per tile: a tile of scores stays at 512 MiB
    with torch.inference_mode():
        for lo in range(0, len(q32), step):
            q = torch.from_numpy(q32[lo : lo + step]).to(blocks.device)
            qc = q.to(blocks.dtype)
            margin = 0 if blocks.dtype == torch.float32 else RESCORE_MARGIN
            best_s = best_i = None
            for start, rows in blocks:
                cand = torch.topk(qc @ rows.T, min(k + margin, rows.shape[0]), dim=1).indices
                # float32 re-scoring of the candidates: products of the stored values, summed in float32
                exact = torch.einsum("bd,bkd->bk", q, rows[cand].float())
                s, pick = torch.topk(exact, min(k, exact.shape[1]), dim=1)
                i = torch.gather(cand, 1, pick) + start
                if best_s is not None:
                    s, i = torch.cat([best_s, s], 1), torch.cat([best_i, i], 1)
                    s, pick = torch.topk(s, k, dim=1)
                    i = torch.gather(i, 1, pick)
                best_s, best_i = s, i
            scores[lo : lo + len(q)] = best_s.float().cpu().numpy()
            found[lo : lo + len(q)] = best_i.cpu().numpy()
    return scores, found

