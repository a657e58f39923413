"""The compact token-table form: trained rows kept, untouched rows rebuilt exactly by the loader."""

from __future__ import annotations

import torch
from safetensors.torch import save_file

from dimefm_pipeline.core.models import WORLD_WEIGHTS, load_state_dict
from dimefm_pipeline.core.weights import KEY, compact, expand, filler


def test_compact_then_load_gives_the_trained_rows_back_and_a_seeded_filler(tmp_path):
    g = torch.Generator().manual_seed(0)
    initial = (torch.randn(500, 16, generator=g) * 0.02).half()
    table = initial.clone()
    table[[3, 77, 499]] += 1.0  # three "trained" rows
    state = {KEY: table, "other": torch.arange(4.0)}
    small = compact(state, initial, seed=5)
    assert small[f"{KEY}.rows"].tolist() == [3, 77, 499] and KEY not in small
    save_file(small, str(tmp_path / "w.safetensors"))
    loaded = load_state_dict(tmp_path / "w.safetensors")
    assert torch.equal(loaded["other"], state["other"]) and loaded[KEY].dtype == torch.float16
    assert torch.equal(loaded[KEY][[3, 77, 499]], table[[3, 77, 499]])
    rest = [i for i in range(500) if i not in (3, 77, 499)]
    assert torch.equal(loaded[KEY][rest], torch.from_numpy(filler(5, 500, 16)).half()[rest])
    assert expand({"plain": torch.ones(2)}).keys() == {"plain"}


def test_the_shipped_teacher_is_compact_and_under_30_mb():
    state = load_state_dict(WORLD_WEIGHTS)
    assert WORLD_WEIGHTS.stat().st_size <= 30_000_000
    assert state[KEY].shape == (49408, 192)
