"""Pseudo-pair mining with real faiss against a brute-force numpy search."""

import faiss
import numpy as np
import pytest

from dimefm_pipeline.core.errors import DimefmError
from dimefm_pipeline.mine.ivf import build_text_index, default_nlist, iter_mine_topk, mine_topk
from dimefm_pipeline.mine.search import mine_topk_torch


def _unit_rows(rng, n, d, dtype=np.float16):
    x = rng.standard_normal((n, d))
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(dtype)


def _brute_force(images, texts, k):
    scores = images.astype(np.float64) @ texts.astype(np.float64).T
    order = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    return np.take_along_axis(scores, order, axis=1), order


@pytest.fixture(scope="module")
def corpus():
    rng = np.random.default_rng(0)
    return _unit_rows(rng, 300, 32), _unit_rows(rng, 2000, 32)


def test_flat_index_equals_brute_force_on_fp16_rows(corpus):
    images, texts = corpus
    scores, indices = mine_topk(images, texts, 5, batch_size=64)  # several image batches
    ref_scores, ref_indices = _brute_force(images, texts, 5)
    assert scores.dtype == np.float32 and indices.dtype == np.int64
    assert scores.shape == indices.shape == (300, 5)
    np.testing.assert_array_equal(indices, ref_indices)
    np.testing.assert_allclose(scores, ref_scores, atol=1e-5)


def test_flat_index_is_used_up_to_the_threshold(corpus):
    _, texts = corpus
    index = build_text_index(texts, exact_threshold=len(texts))
    assert isinstance(index, faiss.IndexFlatIP) and index.ntotal == len(texts)


def test_ivf_is_selected_above_the_threshold_and_exact_with_every_list_probed(corpus):
    images, texts = corpus
    index = build_text_index(texts, exact_threshold=len(texts) - 1)
    assert isinstance(index, faiss.IndexIVFFlat)
    assert index.nlist == default_nlist(len(texts)) and index.ntotal == len(texts)

    nlist = 16
    scores, indices = mine_topk(images, texts, 5, exact_threshold=1000, nlist=nlist, nprobe=nlist)
    ref_scores, ref_indices = _brute_force(images, texts, 5)
    np.testing.assert_array_equal(indices, ref_indices)
    np.testing.assert_allclose(scores, ref_scores, atol=1e-5)


def test_torch_matmul_topk_equals_brute_force_across_blocks(corpus):
    images, texts = corpus
    # sentence blocks smaller than k exercise the running top-k merge
    scores, indices = mine_topk_torch(images, texts, 5, device="cpu", image_batch=70, text_block=3)
    ref_scores, ref_indices = _brute_force(images, texts, 5)
    np.testing.assert_array_equal(indices, ref_indices)
    np.testing.assert_allclose(scores, ref_scores, atol=1e-5)


def test_memory_mapped_cache_is_searched_in_streamed_batches(corpus, tmp_path):
    images, texts = corpus
    mm = np.memmap(tmp_path / "images.f16", dtype=np.float16, mode="w+", shape=images.shape)
    mm[:] = images
    mm.flush()
    mapped = np.memmap(tmp_path / "images.f16", dtype=np.float16, mode="r", shape=images.shape)
    index = build_text_index(texts)
    batches = list(iter_mine_topk(mapped, index, 3, batch_size=128))
    assert [start for start, _, _ in batches] == [0, 128, 256]
    assert [len(s) for _, s, _ in batches] == [128, 128, 44]
    _, ref_indices = _brute_force(images, texts, 3)
    np.testing.assert_array_equal(np.concatenate([i for _, _, i in batches]), ref_indices)


def test_mined_sentences_are_the_true_neighbours_of_planted_pairs():
    rng = np.random.default_rng(1)
    texts = _unit_rows(rng, 500, 16, np.float32)
    # each image is a slightly perturbed copy of one sentence: that sentence must come first
    planted = rng.choice(500, size=50, replace=False)
    noisy = texts[planted] + 0.01 * rng.standard_normal((50, 16)).astype(np.float32)
    images = (noisy / np.linalg.norm(noisy, axis=1, keepdims=True)).astype(np.float32)
    _, indices = mine_topk(images, texts, 2)
    assert indices[:, 0].tolist() == planted.tolist()


def test_bad_inputs_get_clear_errors(corpus):
    images, texts = corpus
    with pytest.raises(DimefmError, match="k must be"):
        mine_topk(images, texts[:4], 5)
    with pytest.raises(DimefmError, match="dim"):
        mine_topk(images[:, :16], texts, 5)
    with pytest.raises(DimefmError, match="float16 or float32"):
        mine_topk(images.astype(np.float64), texts, 5)
    with pytest.raises(DimefmError, match="nprobe"):
        mine_topk(images, texts, 5, exact_threshold=10, nlist=8, nprobe=9)
    with pytest.raises(DimefmError, match="dim"):
        mine_topk_torch(images[:, :16], texts, 5)


@pytest.mark.skipif(faiss.get_num_gpus() > 0, reason="checks the CPU-only error path")
def test_requesting_a_gpu_without_one_is_an_error(corpus):
    _, texts = corpus
    with pytest.raises(DimefmError, match="GPU"):
        build_text_index(texts, use_gpu=True)
