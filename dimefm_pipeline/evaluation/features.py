"""Frozen features: images and sentences through a loaded model, L2-normalised, in batches."""

from __future__ import annotations

import numpy as np
from PIL import Image
from rich.progress import Progress


def progress_bar(enabled: bool = True, transient: bool = True):
    """The progress display of every long evaluation loop (a bar in a terminal, lines in a log)."""
    from dimefm_pipeline.core.progress import progress_bar as shared

    return shared(enabled, transient=transient)


def model_device(loaded) -> str:
    """The device the loaded model's parameters live on."""
    try:
        return str(next(loaded.model.parameters()).device)
    except StopIteration:  # pragma: no cover - a model without parameters
        return "cpu"


def encode_images(loaded, images: list, *, batch_size: int = 256, progress: Progress | None = None,
                  desc: str = "images"):
    """Features of `images` (PIL images or HxWx3 uint8 arrays), fed through the model's own eval transform."""
    import torch

    device = model_device(loaded)
    out = []
    task = progress.add_task(f"encode {desc}", total=len(images)) if progress is not None else None
    with torch.inference_mode():
        for start in range(0, len(images), batch_size):
            chunk = images[start:start + batch_size]
            batch = torch.stack([loaded.preprocess(im if isinstance(im, Image.Image) else Image.fromarray(im))
                                 for im in chunk]).to(device)
            feats = loaded.model.encode_image(batch).float()
            out.append(torch.nn.functional.normalize(feats, dim=-1).cpu())
            if task is not None:
                progress.advance(task, len(chunk))
    if task is not None:
        progress.remove_task(task)
    return torch.cat(out) if out else torch.empty(0, loaded.embed_dim)


def encode_texts(loaded, texts: list[str], *, batch_size: int = 512):
    """Features of `texts`, tokenised by the model's own tokenizer."""
    import torch

    device = model_device(loaded)
    out = []
    with torch.inference_mode():
        for start in range(0, len(texts), batch_size):
            tokens = loaded.tokenizer(list(texts[start:start + batch_size])).to(device)
            feats = loaded.model.encode_text(tokens).float()
            out.append(torch.nn.functional.normalize(feats, dim=-1).cpu())
    return torch.cat(out) if out else torch.empty(0, loaded.embed_dim)


def as_numpy(x) -> np.ndarray:
    """A float32 numpy copy of a feature tensor."""
    return x.detach().cpu().float().numpy()
