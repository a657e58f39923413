"""Linear probe: multinomial logistic regression in torch on frozen features.

As in CLIP_benchmark and ELEVATER, the L2 penalty is chosen on the validation split from a sweep,
then the classifier is refit on train + validation with that penalty and scored once on test.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

DEFAULT_WEIGHT_DECAYS = (0.0, 1e-6, 1e-5, 1e-4, 1e-3, 1e-2, 1e-1)


@dataclass(frozen=True)
class ProbeConfig:
    """How the probe is fitted."""

    weight_decays: tuple[float, ...] = DEFAULT_WEIGHT_DECAYS  # L2 penalties tried on the val split
    max_iter: int = 100  # L-BFGS iterations per fit (full batch)
    seed: int = 0  # initialisation of the weights


@dataclass(frozen=True)
class ProbeResult:
    """Test accuracy with the penalty that won on validation."""

    accuracy: float
    weight_decay: float
    val_accuracy: float
    correct: np.ndarray | None = None  # per test example: predicted right (bool)


def _standardise(train, *others):
    # Scale-free inputs make one penalty grid fit every model's feature scale.
    mean = train.mean(0, keepdim=True)
    std = train.std(0, keepdim=True).clamp_min(1e-6)
    return [(x - mean) / std for x in (train, *others)]


def fit_logistic(x, y, n_classes: int, weight_decay: float, cfg: ProbeConfig = ProbeConfig()):
    """Weights and bias minimising cross-entropy + weight_decay * ||W||^2 (full-batch L-BFGS)."""
    import torch

    # These problems are tiny (thousands x 128): extra threads only add synchronisation, and with a
    # busy second core one L-BFGS fit was ~9x slower on two threads than on one.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return _fit(x, y, n_classes, weight_decay, cfg)
    finally:
        torch.set_num_threads(threads)


def _fit(x, y, n_classes: int, weight_decay: float, cfg: ProbeConfig):
    import torch

    gen = torch.Generator().manual_seed(cfg.seed)
    w = (torch.randn(x.shape[1], n_classes, generator=gen) * 0.01).requires_grad_(True)
    b = torch.zeros(n_classes, requires_grad=True)
    opt = torch.optim.LBFGS([w, b], lr=1.0, max_iter=cfg.max_iter, history_size=10, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(x @ w + b, y) + weight_decay * (w * w).sum()
        loss.backward()
        return loss

    opt.step(closure)
    return w.detach(), b.detach()


def _acc(x, y, wb) -> float:
    if len(y) == 0:
        return float("nan")
    w, b = wb
    return float(((x @ w + b).argmax(1) == y).float().mean())


def linear_probe(train_x, train_y, val_x, val_y, test_x, test_y, n_classes: int,
                 cfg: ProbeConfig = ProbeConfig()) -> ProbeResult:
    """Select the penalty on (train, val), refit on train + val, report test accuracy."""
    import torch

    def t(a, dtype):
        return torch.as_tensor(np.asarray(a), dtype=dtype)

    train_x, val_x, test_x = (t(a, torch.float32) for a in (train_x, val_x, test_x))
    train_y, val_y, test_y = (t(a, torch.long) for a in (train_y, val_y, test_y))
    with torch.enable_grad():
        tx, vx = _standardise(train_x, val_x)
        best_wd, best_val = cfg.weight_decays[0], -1.0
        if len(val_y):
            for wd in cfg.weight_decays:
                acc = _acc(vx, val_y, fit_logistic(tx, train_y, n_classes, wd, cfg))
                if acc > best_val:  # ties keep the smaller penalty: the sweep is in increasing order
                    best_wd, best_val = wd, acc
        all_x, all_y = torch.cat([train_x, val_x]), torch.cat([train_y, val_y])
        ax, sx = _standardise(all_x, test_x)
        wb = fit_logistic(ax, all_y, n_classes, best_wd, cfg)
    w, b = wb
    correct = ((sx @ w + b).argmax(1) == test_y).numpy() if len(test_y) else np.zeros(0, dtype=bool)
    return ProbeResult(_acc(sx, test_y, wb), best_wd, best_val, correct)
