"""DIME-FM distillation losses: KL divergences between teacher and student similarity rows.

Every term compares a row-wise softmax of teacher similarities with the student's over the same
columns (`docs/losses.md` states each formula). Inputs are raw feature batches; they are L2-normalised
here, teacher features are detached, and all similarity work happens in float32 on the features'
device.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor

from dimefm_pipeline.core.distributed import gather_features
from dimefm_pipeline.core.loss_config import LossConfig

__all__ = ["LossConfig", "dimefm_losses", "kl_rows", "similarity_logits"]


def similarity_logits(x: Tensor, y: Tensor, *, logit_scale: float = 100.0) -> Tensor:
    """`logit_scale * x @ y.T` for already L2-normalised rows (n x d, m x d) -> n x m."""
    return logit_scale * (x @ y.T)


def kl_rows(teacher_logits: Tensor, student_logits: Tensor, *, tau: float) -> Tensor:
    """KL_tau(A, B): row-softmax KL of teacher over student at temperature `tau`, summed over
    entries and divided by the number of rows (PyTorch's "batchmean"); no tau^2 factor."""
    if teacher_logits.shape != student_logits.shape:
        raise ValueError(f"logit shapes differ: {tuple(teacher_logits.shape)} vs {tuple(student_logits.shape)}")
    log_p = F.log_softmax(teacher_logits / tau, dim=1)
    log_q = F.log_softmax(student_logits / tau, dim=1)
    return F.kl_div(log_q, log_p, reduction="batchmean", log_target=True)


def _normalise(x: Tensor) -> Tensor:
    # float32 whatever the autocast dtype: with s = 100, fp16 softmax rows lose most of their mass
    return F.normalize(x.float(), dim=-1)


def _mined_pseudo_captions(mined_text: Tensor) -> Tensor:
    """n x d, or n x k x d averaged over k after normalising each sentence."""
    if mined_text.dim() == 3:
        return F.normalize(_normalise(mined_text).mean(dim=1), dim=-1)
    return _normalise(mined_text)


class _Batch(NamedTuple):
    """One modality's features as similarity rows and columns (columns global under `gather`)."""

    rows: Tensor
    cols: Tensor


def _check_features(name: str, x: Tensor, dim: int | None, *, ndim: tuple[int, ...] = (2,)) -> int:
    if x.dim() not in ndim or x.shape[0] == 0:
        raise ValueError(f"{name} must be a non-empty {' or '.join(map(str, ndim))}-D tensor, got shape {tuple(x.shape)}")
    if dim is not None and x.shape[-1] != dim:
        raise ValueError(f"{name} has dim {x.shape[-1]}, expected {dim} (teacher and student dims must match)")
    return x.shape[-1]


def dimefm_losses(
    teacher_image: Tensor,
    teacher_text: Tensor,
    student_image: Tensor,
    student_text: Tensor,
    *,
    logit_scale: float = 100.0,
    tau_vl: float = 1.0,
    tau_pvl: float = 3.0,
    tau_udist: float = 7.0,
    w_vl: float = 0.7,
    w_pvl: float = 0.3,
    w_udist: float = 0.0,
    train_text: bool = False,
    w_vl_text: float | None = None,
    w_pvl_text: float | None = None,
    w_udist_text: float | None = None,
    mined_text: Tensor | None = None,
    w_pvl_mined: float = 0.0,
    gather: bool = False,
    local_loss: bool = False,
) -> dict[str, Tensor]:
    """The DIME-FM loss terms of one batch of n images and m (unpaired) sentences.

    Features are raw (n x d images, m x d sentences); teacher ones are fixed targets and never receive
    gradients. Passing `student_text=teacher_text` (the same tensor) is the reference mode that keeps
    the teacher's text tower. With `train_text=True` the mirrored text-tower terms `vl_text`,
    `pvl_text`, `udist_text` are added (same temperatures as their image-side twins, weights default
    to the image-side ones). `mined_text` holds teacher features of each image's mined sentence(s)
    (n x d, or n x k x d averaged over k) and adds `pvl_mined`. With `gather=True` (under DDP) the
    columns of every similarity span the global batch; `local_loss=True` keeps the rows local.

    Returns scalar tensors `vl`, `pvl`, `udist`, `total`, plus `vl_text`, `pvl_text`, `udist_text`
    when `train_text`, and `pvl_mined` when `mined_text` is given. `total` is the weighted sum; a term
    whose weight is 0 is still reported but computed without autograd and left out of `total`.
    """
    reference_mode = _check_inputs(teacher_image, teacher_text, student_image, student_text, mined_text,
                                   train_text=train_text, w_pvl_mined=w_pvl_mined)

    def batch(x: Tensor) -> _Batch:
        return _Batch(*gather_features(x, local_loss=local_loss)) if gather else _Batch(x, x)

    it = batch(_normalise(teacher_image.detach()))
    tt = batch(_normalise(teacher_text.detach()))
    is_ = batch(_normalise(student_image))
    ts = tt if reference_mode else batch(_normalise(student_text))
    mt = batch(_mined_pseudo_captions(mined_text.detach())) if mined_text is not None else None
    text_weights = None if not train_text else (w_vl if w_vl_text is None else w_vl_text,
                                                 w_pvl if w_pvl_text is None else w_pvl_text,
                                                 w_udist if w_udist_text is None else w_udist_text)
    terms = _terms(it, tt, is_, ts, mt, logit_scale=logit_scale, taus=(tau_vl, tau_pvl, tau_udist),
                   weights=(w_vl, w_pvl, w_udist), text_weights=text_weights, w_pvl_mined=w_pvl_mined)
    return _weighted(terms, student_image)


def _check_inputs(teacher_image, teacher_text, student_image, student_text, mined_text, *, train_text: bool,
                  w_pvl_mined: float) -> bool:
    """Refuse inputs that do not fit together; True in the reference mode (the teacher's text tower)."""
    reference_mode = student_text is teacher_text
    if train_text and reference_mode:
        raise ValueError("train_text=True needs student text features; student_text is the teacher's")
    if w_pvl_mined and mined_text is None:
        raise ValueError("w_pvl_mined > 0 needs mined_text (teacher features of each image's mined sentences)")
    dim = _check_features("teacher_image", teacher_image, None)
    _check_features("teacher_text", teacher_text, dim)
    _check_features("student_image", student_image, dim)
    _check_features("student_text", student_text, dim)
    if student_image.shape[0] != teacher_image.shape[0] or student_text.shape[0] != teacher_text.shape[0]:
        raise ValueError("student and teacher batches must have the same number of rows per modality")
    if mined_text is not None:
        _check_features("mined_text", mined_text, dim, ndim=(2, 3))
        if mined_text.shape[0] != teacher_image.shape[0]:
            raise ValueError("mined_text needs one entry per image")
    return reference_mode


def _terms(it: _Batch, tt: _Batch, is_: _Batch, ts: _Batch, mt: _Batch | None, *, logit_scale: float,
           taus: tuple[float, float, float], weights: tuple[float, float, float],
           text_weights: tuple[float, float, float] | None, w_pvl_mined: float) -> dict:
    """name -> (weight, term builder) of every term asked for; builders run with or without autograd
    depending on the weight. `it`, `tt`: teacher images and sentences; `is_`, `ts`: the student's."""
    tau_vl, tau_pvl, tau_udist = taus

    def kl(x_t: Tensor, y_t: Tensor, x_s: Tensor, y_s: Tensor, tau: float) -> Tensor:
        return kl_rows(
            similarity_logits(x_t, y_t, logit_scale=logit_scale),
            similarity_logits(x_s, y_s, logit_scale=logit_scale),
            tau=tau,
        )

    terms = {
        "vl": (weights[0], lambda: kl(it.rows, tt.cols, is_.rows, ts.cols, tau_vl) + kl(tt.rows, it.cols, ts.rows, is_.cols, tau_vl)),
        "pvl": (weights[1], lambda: 2 * kl(it.rows, it.cols, is_.rows, it.cols, tau_pvl)),
        "udist": (weights[2], lambda: 2 * kl(it.rows, it.cols, is_.rows, is_.cols, tau_udist)),
    }
    if text_weights is not None:
        # mirror image: the teacher's images are the fixed side, each sentence is its own pseudo image
        terms["vl_text"] = (
            text_weights[0],
            lambda: kl(tt.rows, it.cols, ts.rows, it.cols, tau_vl) + kl(it.rows, tt.cols, it.rows, ts.cols, tau_vl),
        )
        terms["pvl_text"] = (text_weights[1], lambda: 2 * kl(tt.rows, tt.cols, ts.rows, tt.cols, tau_pvl))
        terms["udist_text"] = (text_weights[2], lambda: 2 * kl(tt.rows, tt.cols, ts.rows, ts.cols, tau_udist))
    if mt is not None:
        terms["pvl_mined"] = (w_pvl_mined, lambda: 2 * kl(it.rows, mt.cols, is_.rows, mt.cols, tau_pvl))
    return terms


def _weighted(terms: dict, student_image: Tensor) -> dict[str, Tensor]:
    """Every term, and their weighted sum as `total` (terms of weight 0 without autograd, left out)."""
    out: dict[str, Tensor] = {}
    total = None
    for name, (weight, build) in terms.items():
        if weight:
            out[name] = build()
            total = weight * out[name] if total is None else total + weight * out[name]
        else:
            with torch.no_grad():
                out[name] = build()
    if total is None:
        # all weights 0: a zero that still backpropagates, so a training step does not crash
        total = student_image.float().sum() * 0.0
    out["total"] = total
    return out
