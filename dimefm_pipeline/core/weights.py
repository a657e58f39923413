"""Model weights: checkpoints loaded safely, fingerprinted, and stored compactly.

Loading never unpickles code: safetensors, or torch files with `weights_only=True`. A fingerprint
is a sha256 over parameter names, shapes, dtypes and bytes, so the same weights have the same id
whatever file they came from.

Token tables whose rows were mostly never trained have a compact form. A CLIP text tower carries a
49,408-row token table. A model trained on a small vocabulary (the world teacher sees about a
hundred distinct tokens) leaves every other row exactly at its random initial value: no gradient
ever reaches it. Storing those rows wastes most of the file. The compact form keeps the trained rows
as they are and replaces the untouched ones by rows drawn from a seeded NumPy generator, so a loader
rebuilds the full table bit for bit:

    KEY.rows    int64 ids of the kept rows
    KEY.values  those rows
    KEY.filler  int64 [seed, number of rows, width]: the other rows are
                numpy.random.default_rng(seed).standard_normal((rows, width)) * FILLER_STD,
                cast to the dtype of KEY.values

`load_state_dict` expands it, so every loader of the package sees a plain table.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np

from dimefm_pipeline.core.errors import DimefmError

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


def load_state_dict(path: str | Path) -> dict:
    """Load a checkpoint safely: safetensors, or torch with weights_only=True (no pickled code)."""
    import torch

    path = Path(path)
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return expand(load_file(str(path)))
    try:
        sd = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as exc:  # a corrupt file or one that needs pickled code
        raise DimefmError(f"cannot load checkpoint {path}: {exc}") from None
    if isinstance(sd, dict) and "state_dict" in sd and isinstance(sd["state_dict"], dict):
        sd = sd["state_dict"]
    if not isinstance(sd, dict):
        raise DimefmError(f"checkpoint {path} does not hold a state dict")
    return {k.removeprefix("module."): v for k, v in sd.items()}


def state_fingerprint(state: dict) -> str:
    """sha256 over parameter names, shapes, dtypes and bytes: the same weights give the same id."""
    import torch

    h = hashlib.sha256()
    for name in sorted(state):
        t = state[name]
        if not isinstance(t, torch.Tensor):
            continue
        t = t.detach().cpu().contiguous()
        h.update(f"{name}|{tuple(t.shape)}|{t.dtype}".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()
