"""DIME-FM distillation losses: KL divergences between teacher and student similarity rows.

Every term compares a row-wise softmax of teacher similarities with the student's over the same
columns (`docs/losses.md` states each formula). Inputs are raw feature batches; they are L2-normalised
here, teacher features are detached, and all similarity work happens in float32 on the features'
device.
"""

from __future__ import annotations

import math
from typing import NamedTuple, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from dimefm_pipeline.core.distributed import gather_features
from dimefm_pipeline.core.loss_config import COMBINES, LossConfig, direct_term_weights

__all__ = ["LossConfig", "TeacherTargets", "dimefm_losses", "ensemble_losses", "kl_rows", "similarity_logits"]


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


class TeacherTargets(NamedTuple):
    """One teacher's cached rows for a batch, with its own logit scale and weight in an ensemble."""

    image: Tensor  # n x d_t
    text: Tensor  # m x d_t
    mined: Tensor | None = None  # n x d_t or n x k x d_t: its rows of each image's mined sentences
    logit_scale: float | None = None  # the scale of this teacher's similarities (default: the student's)
    weight: float = 1.0


def dimefm_losses(
    teacher_image: Tensor,
    teacher_text: Tensor,
    student_image: Tensor,
    student_text: Tensor,
    *,
    mined_text: Tensor | None = None,
    **kwargs,
) -> dict[str, Tensor]:
    """The DIME-FM loss terms of one batch of n images and m (unpaired) sentences, against one teacher.

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
    return ensemble_losses([TeacherTargets(teacher_image, teacher_text, mined_text)], student_image, student_text,
                           **kwargs)


def ensemble_losses(
    teachers: Sequence[TeacherTargets],
    student_image: Tensor,
    student_text: Tensor,
    *,
    combine: str = "mean",
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
    w_pvl_mined: float = 0.0,
    gather: bool = False,
    local_loss: bool = False,
) -> dict[str, Tensor]:
    """The DIME-FM terms against one or more teachers (`dimefm_losses` is the one-teacher case).

    Each teacher's targets are similarity rows of its own features at its own logit scale, so the
    teachers' dimensions may differ from each other; the terms that compare the student's features
    with a teacher's directly (P-VL, the text tower's VL and P-VL, mined P-VL, and the reference mode,
    which uses teacher 0's sentences as the student's) need that teacher's dimension to be the
    student's. Weights are normalised to sum 1. `combine`: `mean` weighs each teacher's KL term by its
    weight; `mixture` takes the KL to the weighted mixture of the teachers' distributions, for the
    terms whose student side is the student's alone (VL, UDist and the text tower's UDist); the others
    are a weighted mean in both cases.
    The reference mode is `student_text is teachers[0].text`.
    """
    if combine not in COMBINES:
        raise ValueError(f"combine must be one of {COMBINES}, not {combine!r}")
    text_weights = None if not train_text else (w_vl if w_vl_text is None else w_vl_text,
                                                 w_pvl if w_pvl_text is None else w_pvl_text,
                                                 w_udist if w_udist_text is None else w_udist_text)
    direct = direct_term_weights(w_vl, w_pvl, w_vl_text, w_pvl_text, w_pvl_mined, train_text)
    reference_mode = _check_inputs(teachers, student_image, student_text, train_text=train_text,
                                   w_pvl_mined=w_pvl_mined, direct_weights=tuple(direct.values()))

    def batch(x: Tensor) -> _Batch:
        return _Batch(*gather_features(x, local_loss=local_loss)) if gather else _Batch(x, x)

    total_w = sum(t.weight for t in teachers)  # weights normalised to sum 1 (one teacher: its weight is 1)
    side = [_Teacher(batch(_normalise(t.image.detach())), batch(_normalise(t.text.detach())),
                     batch(_mined_pseudo_captions(t.mined.detach())) if t.mined is not None else None,
                     logit_scale if t.logit_scale is None else t.logit_scale, t.weight / total_w)
            for t in teachers if t.weight]
    is_ = batch(_normalise(student_image))
    # the reference mode: teacher 0's sentence rows are the student's, whatever its weight
    ts = (side[0].text if teachers[0].weight else batch(_normalise(teachers[0].text.detach()))) if reference_mode \
        else batch(_normalise(student_text))
    terms = _terms(side, is_, ts, logit_scale=logit_scale, taus=(tau_vl, tau_pvl, tau_udist), combine=combine,
                   weights=(w_vl, w_pvl, w_udist), text_weights=text_weights, w_pvl_mined=w_pvl_mined)
    return _weighted(terms, student_image)


class _Teacher(NamedTuple):
    image: _Batch
    text: _Batch
    mined: _Batch | None
    scale: float
    weight: float


def _check_inputs(teachers, student_image, student_text, *, train_text: bool, w_pvl_mined: float,
                  direct_weights: tuple) -> bool:
    """Refuse inputs that do not fit together; True in the reference mode (teacher 0's text tower)."""
    if not teachers or not any(t.weight for t in teachers):
        raise ValueError("at least one teacher with a weight above 0 is needed")
    if any(t.weight < 0 for t in teachers):
        raise ValueError("teacher weights cannot be negative")
    reference_mode = student_text is teachers[0].text
    if train_text and reference_mode:
        raise ValueError("train_text=True needs student text features; student_text is the teacher's")
    dim = _check_features("student_image", student_image, None)
    _check_features("student_text", student_text, dim)
    for i, t in enumerate(teachers):
        t_dim = _check_features(f"teacher {i} image", t.image, None)
        _check_features(f"teacher {i} text", t.text, t_dim)
        if w_pvl_mined and t.mined is None:
            raise ValueError("w_pvl_mined > 0 needs mined_text (teacher features of each image's mined sentences)")
        if t_dim != dim and ((t.weight and any(direct_weights)) or (reference_mode and i == 0)):
            raise ValueError(f"teacher {i} has dim {t_dim}, the student {dim}: P-VL, the text tower's VL and P-VL, mined "
                             "P-VL and the reference mode compare the student's features with the teacher's directly "
                             "(teacher and student dims must match); set their weights to 0 or use a student of "
                             "that dim")
        if student_image.shape[0] != t.image.shape[0] or student_text.shape[0] != t.text.shape[0]:
            raise ValueError("student and teacher batches must have the same number of rows per modality")
        if t.mined is not None:
            _check_features("mined_text", t.mined, t_dim, ndim=(2, 3))
            if t.mined.shape[0] != t.image.shape[0]:
                raise ValueError("mined_text needs one entry per image")
    return reference_mode


def _terms(side: list[_Teacher], is_: _Batch, ts: _Batch, *, logit_scale: float, taus: tuple[float, float, float],
           combine: str, weights: tuple[float, float, float], text_weights: tuple[float, float, float] | None,
           w_pvl_mined: float) -> dict:
    """name -> (weight, term builder) of every term asked for; builders run with or without autograd
    depending on the weight. Each teacher's `image`, `text`: its images and sentences; `is_`, `ts`:
    the student's."""
    tau_vl, tau_pvl, tau_udist = taus

    def kl(teacher, student, tau: float, *, own: bool = True) -> Tensor:
        """KL between teacher rows `teacher(t)` = (x, y) and student rows `student(t)`; `own`: the
        student's side is the student's alone (the same for every teacher), so it can be a mixture."""
        if combine == "mixture" and own and len(side) > 1:
            log_p = torch.logsumexp(torch.stack([
                math.log(t.weight) + F.log_softmax(similarity_logits(*teacher(t), logit_scale=t.scale) / tau, dim=1)
                for t in side]), dim=0)
            log_q = F.log_softmax(similarity_logits(*student(side[0]), logit_scale=logit_scale) / tau, dim=1)
            return F.kl_div(log_q, log_p, reduction="batchmean", log_target=True)
        total = None
        for t in side:
            term = t.weight * kl_rows(similarity_logits(*teacher(t), logit_scale=t.scale),
                                      similarity_logits(*student(t), logit_scale=logit_scale), tau=tau)
            total = term if total is None else total + term
        return total

    # `direct`: the terms that compare the student's features with a teacher's can be computed (every
    # teacher's dim is the student's)
    direct = all(t.image.rows.shape[-1] == is_.rows.shape[-1] for t in side)
    terms = {
        "vl": (weights[0], lambda: kl(lambda t: (t.image.rows, t.text.cols), lambda t: (is_.rows, ts.cols), tau_vl)
               + kl(lambda t: (t.text.rows, t.image.cols), lambda t: (ts.rows, is_.cols), tau_vl)),
        "pvl": (weights[1], lambda: 2 * kl(lambda t: (t.image.rows, t.image.cols), lambda t: (is_.rows, t.image.cols),
                                           tau_pvl, own=False)),
        "udist": (weights[2], lambda: 2 * kl(lambda t: (t.image.rows, t.image.cols), lambda t: (is_.rows, is_.cols),
                                             tau_udist)),
    }
    if text_weights is not None:
        # mirror image: the teacher's images are the fixed side, each sentence is its own pseudo image
        terms["vl_text"] = (text_weights[0], lambda: kl(lambda t: (t.text.rows, t.image.cols),
                                                        lambda t: (ts.rows, t.image.cols), tau_vl, own=False)
                            + kl(lambda t: (t.image.rows, t.text.cols), lambda t: (t.image.rows, ts.cols), tau_vl,
                                 own=False))
        terms["pvl_text"] = (text_weights[1], lambda: 2 * kl(lambda t: (t.text.rows, t.text.cols),
                                                             lambda t: (ts.rows, t.text.cols), tau_pvl, own=False))
        terms["udist_text"] = (text_weights[2], lambda: 2 * kl(lambda t: (t.text.rows, t.text.cols),
                                                               lambda t: (ts.rows, ts.cols), tau_udist))
    if side[0].mined is not None:
        terms["pvl_mined"] = (w_pvl_mined, lambda: 2 * kl(lambda t: (t.image.rows, t.mined.cols),
                                                          lambda t: (is_.rows, t.mined.cols), tau_pvl, own=False))
    if not direct:  # their weights are 0 (`_check_inputs`): left out, as they cannot be computed
        for name in ("pvl", "vl_text", "pvl_text", "pvl_mined"):
            terms.pop(name, None)
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
