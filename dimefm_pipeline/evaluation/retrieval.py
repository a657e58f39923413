"""Image-text retrieval: recall at k in both directions over held-out paired captions."""

from __future__ import annotations

import numpy as np


def recall_at_k(image_features, text_features, caption_image, ks: tuple[int, ...] = (1, 5)) -> dict[str, float]:
    """R@k for text->image (the caption's image is in the top k) and image->text (any of its captions is).

    `caption_image[i]` is the index of the image that caption i describes.
    """
    import torch

    owner = torch.as_tensor(np.asarray(caption_image), dtype=torch.long)
    sims = text_features @ image_features.T  # captions x images
    out: dict[str, float] = {}
    n_img = image_features.shape[0]
    for k in ks:
        kk = min(k, n_img)
        top_img = sims.topk(kk, dim=1).indices
        out[f"text_to_image_R@{k}"] = float((top_img == owner[:, None]).any(1).float().mean())
        top_txt = sims.T.topk(min(k, sims.shape[0]), dim=1).indices  # images x k caption indices
        hit = owner[top_txt] == torch.arange(n_img)[:, None]
        out[f"image_to_text_R@{k}"] = float(hit.any(1).float().mean())
    return out
