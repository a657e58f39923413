"""A compact form for token-embedding tables whose rows were mostly never trained.

A CLIP text tower carries a 49,408-row token table. A model trained on a small vocabulary (the
world teacher sees about a hundred distinct tokens) leaves every other row exactly at its random
initial value: no gradient ever reaches it. Storing those rows wastes most of the file. The compact
form keeps the trained rows as they are and replaces the untouched ones by rows drawn from a seeded
NumPy generator, so a loader rebuilds the full table bit for bit:

    KEY.rows    int64 ids of the kept rows
    KEY.values  those rows
    KEY.filler  int64 [seed, number of rows, width]: the other rows are
                numpy.random.default_rng(seed).standard_normal((rows, width)) * FILLER_STD,
                cast to the dtype of KEY.values

`expand` is applied by `models.load_state_dict`, so every loader of the package sees a plain table.
"""

from __future__ import annotations

import numpy as np

KEY = "token_embedding.weight"
FILLER_STD = 0.02  # open_clip's initial std for the token table


def filler(seed: int, rows: int, width: int) -> np.ndarray:
    """The stand-in rows (float32): the same for the same (seed, rows, width)."""
    return (np.random.default_rng(seed).standard_normal((rows, width), dtype=np.float32) * FILLER_STD)


def compact(state: dict, initial, seed: int) -> dict:
    """`state` with KEY stored compactly: rows equal to `initial` (the table at initialisation) are dropped."""
    import torch

    table = state[KEY]
    touched = (table != initial.to(table.dtype)).any(dim=1)
    rows = torch.nonzero(touched).flatten()
    out = {k: v for k, v in state.items() if k != KEY}
    out[f"{KEY}.rows"] = rows.to(torch.int64)
    out[f"{KEY}.values"] = table[rows].contiguous()
    out[f"{KEY}.filler"] = torch.tensor([seed, table.shape[0], table.shape[1]], dtype=torch.int64)
    return out


def expand(state: dict) -> dict:
    """The plain state dict of a compact one (unchanged if it is not compact)."""
    import torch

    if f"{KEY}.rows" not in state:
        return state
    rows, values = state.pop(f"{KEY}.rows"), state.pop(f"{KEY}.values")
    seed, n, width = (int(v) for v in state.pop(f"{KEY}.filler"))
    table = torch.from_numpy(filler(seed, n, width)).to(values.dtype)
    table[rows] = values
    state[KEY] = table
    return state
