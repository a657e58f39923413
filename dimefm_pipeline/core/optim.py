"""What the optimisers of the package share: AdamW parameter groups and the cosine decay."""

from __future__ import annotations

import math


def param_groups(model, weight_decay: float) -> list[dict]:
    """AdamW groups: no decay on 1-D parameters (gains, biases, the logit scale), positional, class
    and token embeddings; parameters that are not trained are left out."""
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        skip = p.ndim < 2 or name.endswith(".bias") or "positional_embedding" in name or "class_embedding" in name or "token_embedding" in name
        (no_decay if skip else decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def cosine(progress: float, lr: float, min_lr: float) -> float:
    """Cosine decay from `lr` (progress 0) to `min_lr` (progress 1)."""
    return min_lr + 0.5 * (lr - min_lr) * (1 + math.cos(math.pi * progress))
