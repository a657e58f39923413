"""The searches of pseudo-pair mining: for image rows, their top-k cached sentences by teacher cosine
similarity (`mine.run` deals image blocks to ranks and stores the result).

Inputs are L2-normalised rows (fp16 or fp32, in memory or memory-mapped). The default is exact and
needs no index (`exact_topk`): a block of images against the sentences, block by block, keeping a
running top-k, so memory is bounded by the block sizes whatever the corpus size (a float32 torch
matrix product on the CPU; on a GPU a half-precision product with the sentences resident on the
device when they fit, its candidates re-scored in float32). faiss's blocked `knn` stays as an engine
for comparison (2.6-3.4x slower on a CPU); `mine_topk_torch` is the plain reference the tests and
benchmarks check the engines against; an approximate faiss IVF index is `ivf.py`'s.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from dimefm_pipeline.core.errors import DimefmError


def check_matrix(name: str, x: np.ndarray) -> None:
    """Refuse what is not a non-empty 2-D float16 or float32 array."""
    if x.ndim != 2 or x.shape[0] == 0:
        raise DimefmError(f"{name} must be a non-empty 2-D array, got shape {x.shape}")
    if x.dtype not in (np.float16, np.float32):
        raise DimefmError(f"{name} must be float16 or float32, got {x.dtype}")


def float32_batches(x: np.ndarray, batch_size: int) -> Iterator[tuple[int, np.ndarray]]:
    """(first row, float32 copy) of consecutive blocks of `batch_size` rows."""
    for start in range(0, x.shape[0], batch_size):
        yield start, np.ascontiguousarray(x[start : start + batch_size], dtype=np.float32)


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
    check_matrix("image embeddings", queries)
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

    check_matrix("image embeddings", image_emb)
    check_matrix("text embeddings", text_emb)
    if image_emb.shape[1] != text_emb.shape[1]:
        raise DimefmError(f"image embeddings have dim {image_emb.shape[1]} but sentence embeddings have dim {text_emb.shape[1]}")
    if not 1 <= k <= text_emb.shape[0]:
        raise DimefmError(f"k must be between 1 and the number of sentences ({text_emb.shape[0]}), got {k}")
    dev = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    texts = [torch.from_numpy(block).to(dev) for _, block in float32_batches(text_emb, text_block)]
    scores = np.empty((image_emb.shape[0], k), dtype=np.float32)
    indices = np.empty((image_emb.shape[0], k), dtype=np.int64)
    with torch.inference_mode():
        for start, queries in float32_batches(image_emb, image_batch):
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
