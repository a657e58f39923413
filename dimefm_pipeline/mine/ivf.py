"""An approximate index for mining, for users who want one: a faiss IVF index over the sentences
(`dimefm mine --engine ivf`), flat below EXACT_THRESHOLD sentences, on the GPU when faiss has one."""

from __future__ import annotations

import math
from collections.abc import Iterator

import numpy as np

from dimefm_pipeline.core.errors import DimefmError
from dimefm_pipeline.mine.search import check_matrix, float32_batches

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


def require_faiss():
    """The faiss module, or a one-line error saying how to install it (the package leaves faiss to an
    extra: faiss-cpu and faiss-gpu ship the same module and must never be installed together)."""
    try:
        import faiss
    except ImportError:
        raise DimefmError("--engine ivf needs faiss, which is not installed: pip install 'dimefm[cpu]' (faiss-cpu), or "
                          "'dimefm[gpu]' (faiss-gpu-cu12) on a CUDA machine; --engine exact (the default) needs no "
                          "faiss") from None
    return faiss


def _gpu_available() -> bool:
    import faiss

    return hasattr(faiss, "StandardGpuResources") and faiss.get_num_gpus() > 0


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
    faiss = require_faiss()

    check_matrix("text embeddings", text_emb)
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
    for _, block in float32_batches(text_emb, batch_size):
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
    check_matrix("image embeddings", image_emb)
    if image_emb.shape[1] != index.d:
        raise DimefmError(f"image embeddings have dim {image_emb.shape[1]} but sentence embeddings have dim {index.d}")
    if not 1 <= k <= index.ntotal:
        raise DimefmError(f"k must be between 1 and the number of sentences ({index.ntotal}), got {k}")
    if k > GPU_MAX_K and type(index).__name__.startswith("Gpu"):
        raise DimefmError(f"k={k} exceeds the faiss GPU limit of {GPU_MAX_K}")
    for start, queries in float32_batches(image_emb, batch_size):
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
