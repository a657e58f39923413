"""The teacher over this rank's units: batches from the loader (`batches.UnitBatches`), fp16
embeddings and their rows into each unit's writer (`store.shards.UnitWriter`), a unit's shards and
commit marker written when its last read block arrives."""

from __future__ import annotations

import contextlib
import time

import numpy as np
import torch
from torch.utils.data import DataLoader

from dimefm_pipeline.core import distributed as dist
from dimefm_pipeline.core.progress import progress_bar
from dimefm_pipeline.core.signals import ignore_in_worker, stop_requested
from dimefm_pipeline.encode.batches import CachedViews, UnitBatches
from dimefm_pipeline.formats.accounting import bug, check_unit
from dimefm_pipeline.formats.base import PACKED, Limits
from dimefm_pipeline.formats.guards import LOADER_TIMEOUT, guarded
from dimefm_pipeline.store.shards import UnitWriter


def encode_units(units, loaded, cfg, cache_dir, rank: int, device, committer, show: bool, meter, imported=None) -> None:
    """Encode `units` (this rank's share) into shards; `committer` (rank 0) moves finished units into
    the manifest now and then; `meter` counts for the one progress display of all ranks. `imported`:
    teacher rows computed elsewhere, taken for the items that have one."""
    loader = _loader(units, loaded, cfg, device, imported)
    encode_fn = loaded.model.encode_image if cfg.modality == "image" else loaded.model.encode_text
    amp = autocast(cfg.precision, device)
    open_units: dict = {}  # (source, unit) -> [writer, blocks finished]
    with progress_bar(show) as bar:
        what = "records" if meter.by_records else "units"
        task = bar.add_task(f"encode {cfg.modality}s ({what})", total=meter.total, items=0, rate=0.0)
        t0 = time.time()
        for batch in guarded(loader, "encoding"):
            u = batch.unit
            state = open_units.get((u.source_id, u.index))
            if state is None:
                writer = UnitWriter(cache_dir, u.source_id, u.index, cfg.modality, loaded.embed_dim, cfg.shard_size, rank)
                state = open_units[(u.source_id, u.index)] = [writer, 0]
            writer = state[0]
            if batch.keys:
                emb = _embeddings(batch, encode_fn, amp, device, loaded.embed_dim)
                columns = _text_columns(batch) if cfg.modality == "text" else _image_columns(batch, writer)
                writer.add(emb, imported=[r is not None for r in batch.imported], **columns)
            writer.commit.errors.extend(batch.errors)
            writer.commit.duplicates += batch.duplicates
            writer.commit.truncated += sum(batch.truncated)
            writer.commit.listed += batch.listed
            state[1] += batch.last
            finished = state[1] == batch.blocks
            if finished:
                _check_unit(writer, u, cfg.views if cfg.modality == "image" else 1)
                writer.finish()
                del open_units[(u.source_id, u.index)]
                if committer is not None:
                    committer()
            n_items = len(batch.keys) if cfg.modality == "text" else batch.view_numbers.count(0)
            meter.add(records=n_items + len(batch.errors) + batch.duplicates, items=n_items, units=int(finished))
            done, all_items = meter.done()
            bar.update(task, completed=done, items=all_items, rate=all_items / max(time.time() - t0, 1e-9))
            if stop_requested():  # units not finished are left to the resume, which redoes them whole
                open_units.clear()
                break
        meter.flush()
        dist.barrier()  # every rank's last count is written: the last line shows the whole run
        meter.add(units=0, refresh=True)
        done, all_items = meter.done()
        bar.update(task, completed=done, items=all_items, rate=all_items / max(time.time() - t0, 1e-9))
    if open_units:
        raise RuntimeError(f"{len(open_units)} unit(s) ended before all their read blocks arrived")


def _embeddings(batch, encode_fn, amp, device, dim: int) -> np.ndarray:
    """The batch's fp16 unit rows: the teacher's for its inputs, the imported ones for the others."""
    emb = np.empty((len(batch.keys), dim), np.float16)
    mine = [i for i, row in enumerate(batch.imported) if row is None]
    if batch.inputs is not None:
        with torch.no_grad(), amp:
            feats = encode_fn(batch.inputs.to(device, non_blocking=True))
        emb[mine] = torch.nn.functional.normalize(feats.float(), dim=-1).to(torch.float16).cpu().numpy()
    for i, row in enumerate(batch.imported):
        if row is not None:
            emb[i] = row
    return emb


def _check_unit(writer, unit, views: int) -> None:
    """Every record the unit's readers gave is one cached item, one recorded error or one duplicate."""
    c = writer.commit
    if unit.modality == "text" and unit.records >= 0 and c.listed != unit.records:
        raise bug(f"unit {unit.index} of source {unit.source_id} ({unit.abspath})",
                  f"planning found {unit.records} records, reading {c.listed}")
    check_unit(f"unit {unit.index} of source {unit.source_id} ({unit.abspath})", c.listed, writer.rows // views,
               len(c.errors), c.duplicates)


def _loader(units, loaded, cfg, device, imported=None) -> DataLoader:
    cached_views = None
    if cfg.modality == "image" and cfg.views > 1:
        from dimefm_pipeline.formats.images import ViewAugment

        pp = loaded.preprocess_cfg
        cached_views = CachedViews(cfg.views, ViewAugment.named(cfg.view_augment), cfg.view_seed, loaded.image_size, pp["mean"],
                            pp["std"])
    ds = UnitBatches(units, cfg.batch_size, loaded.preprocess, loaded.tokenizer, loaded.context_length, cfg.item_timeout,
                     cached_views, imported, Limits(cfg.max_image_bytes, cfg.max_image_pixels))
    # read blocks (not units) are dealt to workers, so one large folder unit still keeps every worker busy
    workers = dist.loader_workers(cfg.workers) if units else 0
    return DataLoader(ds, batch_size=None, num_workers=workers, pin_memory=device.type == "cuda",
                      prefetch_factor=4 if workers else None, persistent_workers=False,
                      timeout=LOADER_TIMEOUT if workers else 0, worker_init_fn=ignore_in_worker if workers else None)


def _text_columns(batch) -> dict:
    return dict(key=batch.keys, pos=batch.pos, file=batch.files, text=batch.texts, truncated=batch.truncated,
                text_hash=np.asarray(batch.hashes, np.int64))


def _image_columns(batch, writer) -> dict:
    """The rows' columns with their locators; bytes of packed formats go into the unit's pack file,
    once per image (its other views share the offset)."""
    offsets = list(batch.offsets)
    for i, b in enumerate(batch.packed):
        if b is not None:
            offsets[i] = writer.add_packed(b)
        elif i and batch.view_numbers[i] and batch.packed[i - batch.view_numbers[i]] is not None:
            offsets[i] = offsets[i - batch.view_numbers[i]]
    packed = [batch.packed[i - v] is not None for i, v in enumerate(batch.view_numbers)]
    loc_file = [PACKED if p else f for p, f in zip(packed, batch.files)]
    boxes = np.asarray(batch.boxes, dtype=np.int64).reshape(-1, 5)
    return dict(key=batch.keys, pos=batch.pos, file=batch.files, loc_file=loc_file, offset=offsets, length=batch.lengths,
                payload_hash=batch.payload_hashes, view=batch.view_numbers, crop_x0=boxes[:, 0], crop_y0=boxes[:, 1],
                crop_x1=boxes[:, 2], crop_y1=boxes[:, 3], flip=boxes[:, 4])


def autocast(precision: str, device):
    """The teacher's autocast context for `--precision` (fp16 or bf16 on CUDA; nothing on CPU)."""
    if device.type != "cuda" or precision == "fp32":
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    return torch.autocast("cuda", dtype=dtype)
