"""A step's loss over the student's embeddings, and its gradients from micro-batches.

Every DIME-FM term is a distribution over the whole batch, so a large batch cannot be cut into
independent pieces whose gradients are summed: each piece would see only its own rows. The
embedding-gradient cache ("GradCache", Gao et al. 2021) cuts the chain rule instead:

1. every micro-batch of images (and of sentences, with the student's own text tower) is embedded
   without autograd, and the embeddings are concatenated into the batch's;
2. the full batch's loss runs on those embeddings as leaf tensors, and one backward gives the
   gradient of the loss with respect to every embedding (under torchrun the loss gathers the
   embeddings of every rank, so its rows span the global batch, as without micro-batches);
3. each micro-batch is embedded again, with autograd, and its slice of those gradients is
   back-propagated into the parameters, where the micro-batches' gradients add up.

The parameter gradients are then those of one backward through the whole batch, while only one
micro-batch's activations are held at a time; the price is a second forward pass. Exact for models
whose output for an input does not depend on the rest of its batch: BatchNorm normalises with the
statistics of the micro-batch (as on several GPUs without SyncBatchNorm), so there it is not.
"""

from __future__ import annotations

import contextlib

from dimefm_pipeline.core import distributed as dist
from dimefm_pipeline.core.losses import TeacherTargets, ensemble_losses
from dimefm_pipeline.distill.config import DistillConfig


def batch_losses(cfg: DistillConfig, targets: list, s_img, s_txt, *, world: int = 1) -> dict:
    """The loss terms of a batch: each teacher's `targets` against the student's image embeddings and
    its sentence embeddings (None with the teacher's text tower: the first teacher's sentence rows
    stand in)."""
    weights = cfg.teacher_weight_list or [1.0]
    scales = cfg.teacher_scale_list or [None]
    teachers = [TeacherTargets(t["image"], t["text"], t["mined"], s, w) for t, w, s in zip(targets, weights, scales)]
    return ensemble_losses(teachers, s_img, targets[0]["text"] if s_txt is None else s_txt, combine=cfg.ensemble,
                           train_text=s_txt is not None, gather=world > 1, **cfg.loss.as_kwargs())


def micro_backward(cfg: DistillConfig, job, pixels, tokens, targets: list, device, *, world: int = 1,
                   check=None) -> dict:
    """Forward and backward of one step in micro-batches of `cfg.micro_batch` images and sentences.
    Afterwards every parameter's `.grad` holds the gradient of the full batch's loss, averaged over
    ranks and multiplied by the grad scaler's scale (if any), as after one backward of the whole batch
    under DDP. Returns the loss terms; `check(total loss)` runs before any parameter gradient."""
    import torch

    towers = [(_image, pixels.split(cfg.micro_batch))]  # the teacher's text tower: cached rows, fixed
    if tokens is not None:
        towers.append((_text, tokens.split(cfg.micro_batch)))
    # 1. embeddings without a graph; RNG states kept so that pass 3 draws the same dropout masks
    with torch.no_grad(), torch.autocast(device.type, **job.autocast), _running_stats_kept(job.model):
        passes = [_embed(job.model, encode, chunks, device) for encode, chunks in towers]
    leaves = [torch.cat(embeddings).requires_grad_() for embeddings, _ in passes]
    # 2. the full batch's loss on those embeddings; its backward stops at the leaves
    losses = batch_losses(cfg, targets, leaves[0], leaves[1] if tokens is not None else None, world=world)
    if check is not None:
        check(losses["total"])
    (losses["total"] if job.scaler is None else job.scaler.scale(losses["total"])).backward()
    # 3. every micro-batch again, with a graph, back-propagating its slice of the embedding gradients.
    # The plain module, not the DDP wrapper (whose gradient hooks stay idle without its forward): a DDP
    # forward with one tower leaves the other tower's parameters without gradients and breaks its
    # reduction. The gradients are averaged over ranks once instead, after the last micro-batch: the
    # average DDP takes, so the update is one process's on the global batch.
    for (encode, chunks), (_, states), leaf in zip(towers, passes, leaves):
        grads = leaf.grad if leaf.grad is not None else torch.zeros_like(leaf)  # a tower no term uses
        for chunk, state, grad in zip(chunks, states, grads.split(cfg.micro_batch)):
            _set_rng_state(state, device)
            with torch.autocast(device.type, **job.autocast):
                out = encode(job.model, chunk, device)
            out.backward(grad)
    if world > 1:
        dist.average_gradients(job.model.parameters())
    return losses


def _image(model, pixels, device):
    return model(pixels.to(device, non_blocking=True), None)[0]


def _text(model, tokens, device):
    return model(None, tokens.to(device, non_blocking=True))[1]


def _embed(model, encode, chunks, device) -> tuple[list, list]:
    """Each chunk's embeddings, and the RNG state it was embedded with."""
    embeddings, states = [], []
    for chunk in chunks:
        states.append(_rng_state(device))
        embeddings.append(encode(model, chunk, device))
    return embeddings, states


def _rng_state(device):
    import torch

    return torch.get_rng_state(), torch.cuda.get_rng_state(device) if device.type == "cuda" else None


def _set_rng_state(state, device) -> None:
    import torch

    cpu, cuda = state
    torch.set_rng_state(cpu)
    if cuda is not None:
        torch.cuda.set_rng_state(cuda, device)


@contextlib.contextmanager
def _running_stats_kept(model):
    """BatchNorm layers normalise with their batch's statistics (train mode) but leave their running
    statistics alone: the first pass must not count a micro-batch that the second pass counts again."""
    from torch.nn.modules.batchnorm import _BatchNorm

    layers = [m for m in model.modules() if isinstance(m, _BatchNorm) and m.track_running_stats]
    for m in layers:
        m.track_running_stats = False
    try:
        yield
    finally:
        for m in layers:
            m.track_running_stats = True
