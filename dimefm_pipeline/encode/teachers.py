"""`dimefm encode teacher`: add a teacher to a cache. Every row of every complete shard (each image
view, each sentence) is read back where the cache's own teacher read it and encoded by the new
teacher into a companion shard with the same rows in the same order, so the teachers' targets of
an item are aligned by construction (`store.manifest.teachers`).

Inputs are what the cache's teacher saw: an image's bytes from its locator (checked against the
hash stage one stored), through the new teacher's own preprocessing for view 0 and the recorded
crop and flip for cached views; a sentence's text from its shard, cut where stage one cut it.
Under torchrun the shards are dealt to ranks; each finished companion leaves a marker that rank 0
commits, so a run killed at any moment resumes with the shards it had not finished.
"""

from __future__ import annotations

import time
from dataclasses import asdict
from pathlib import Path

import numpy as np

from dimefm_pipeline.core import distributed as dist
from dimefm_pipeline.core import models
from dimefm_pipeline.core.errors import DimefmError
from dimefm_pipeline.encode.config import AddTeacherConfig
from dimefm_pipeline.formats.files import BadItem
from dimefm_pipeline.store.companions import companion_markers, remove_partial_companions, write_companion
from dimefm_pipeline.store.manifest import Manifest, TeacherInfo, lock_wait
from dimefm_pipeline.store.manifest import catalog
from dimefm_pipeline.store.manifest import teachers as named

def add_teacher(cfg: AddTeacherConfig, *, command: str = "", progress: bool = True) -> dict | None:
    """Encode every cached row with the teacher of `cfg`; returns (on rank 0) what was done."""
    import torch

    from dimefm_pipeline.core.signals import stop_on_signals, stop_requested
    from dimefm_pipeline.store.cache import load_cache

    rank, world, _, device = dist.init_distributed()
    threads = torch.get_num_threads()
    spec = models.resolve_spec(cfg.teacher, cfg.pretrained)
    loaded = models.build(spec, device=str(device), quiet=True)
    info = TeacherInfo.of_model(loaded)
    name = cfg.name or catalog.default_name(spec.arch, spec.pretrained)
    lock, t0 = None, time.time()
    try:
        with stop_on_signals():
            result = None
            if rank == 0:
                try:
                    lock, result = _register(cfg, command, world, name, info)
                except DimefmError as exc:
                    result = ("error", str(exc))
            result = dist.broadcast_object(result)
            if result[0] == "error":
                raise DimefmError(result[1])
            _, teacher_id, run_id, todo, recovered = result
            try:
                idx = load_cache(cfg.cache, wait=lock_wait(), sources=True, need_images=False, need_texts=False)
                rows_done = _encode_shards(cfg, loaded, idx, teacher_id, todo[rank::world], device,
                                           progress and rank == 0, stop_requested)
                dist.barrier()
            except BaseException:
                if rank == 0:  # what finished is committed, the run recorded failed
                    _commit(cfg.cache, teacher_id, run_id, "failed", time.time() - t0)
                raise
            stopped = stop_requested()
            if rank != 0:
                return None
            status = "interrupted" if stopped else "complete"
            committed = recovered + _commit(cfg.cache, teacher_id, run_id, status, time.time() - t0)
        if stopped:
            from dimefm_pipeline.core.errors import Interrupted

            raise Interrupted(stopped, f"encode teacher stopped; its finished shards are committed. Resume with: "
                                       f"{command or 'the same dimefm encode teacher command'}")
        rows = sum(n for *_, n, _ in todo) if world > 1 else rows_done  # every rank's share (all finished)
        return {"teacher": name, "teacher_id": teacher_id, "shards": committed, "rows": rows,
                "already": not todo and not recovered, "seconds": time.time() - t0}
    finally:
        if lock is not None:
            lock.release()
        torch.set_num_threads(threads)
        dist.destroy()


def _register(cfg: AddTeacherConfig, command: str, world: int, name: str, info: TeacherInfo):
    """Rank 0: the teacher recorded (or found), leftover markers committed, the shards still to do."""
    from dimefm_pipeline.encode.run import writer_lock

    if not Path(cfg.cache).exists():
        raise DimefmError(f"no cache at {cfg.cache}: encode images and sentences with the cache's own teacher first")
    with Manifest(cfg.cache, wait=lock_wait()) as man:
        lock = writer_lock(man.cache_dir)
        try:
            with man.transaction():
                teacher_id = named.record_teacher(man, name, info)
            run_id = catalog.start_run(man, "encode-teacher", command, {**asdict(cfg), "name": name}, world)
            recovered = _ingest_markers(man, teacher_id, run_id)  # finished by a run cut off before committing
            remove_partial_companions(man.cache_dir, teacher_id)  # half-written by a killed run
            todo = [(r[0], r[1], r[3], r[4]) for r in named.shards_to_add(man, teacher_id)]
        except BaseException:
            lock.release()
            raise
    return lock, ("ok", teacher_id, run_id, todo, recovered)


def _encode_shards(cfg, loaded, idx, teacher_id: int, todo: list, device, show: bool, stop_requested) -> int:
    """This rank's shards: (shard id, modality, rows, first global row) each into a companion shard."""
    from dimefm_pipeline.core.progress import progress_bar
    from dimefm_pipeline.store.reader import ImageReader

    reader = ImageReader(idx) if any(m == "image" for _, m, _, _ in todo) else None
    texts = _shard_texts(idx)
    total, done, t0 = sum(r for *_, r, _ in todo), 0, time.time()
    with progress_bar(show) as bar:
        task = bar.add_task(f"encode rows with teacher {teacher_id}", total=total * dist.world_size(), items=0, rate=0.0)
        for shard_id, modality, rows, first_row in todo:
            emb = np.empty((rows, loaded.embed_dim), np.float16)
            for lo in range(0, rows, cfg.batch_size):
                hi = min(lo + cfg.batch_size, rows)
                if modality == "image":
                    inputs = _image_inputs(loaded, idx, reader, first_row + lo, first_row + hi)
                else:
                    inputs = _text_inputs(loaded, texts, first_row + lo, first_row + hi)
                emb[lo:hi] = _forward(loaded, modality, inputs, device, cfg.precision)
                done += hi - lo
                bar.update(task, completed=done * dist.world_size(), items=done, rate=done / max(time.time() - t0, 1e-9))
                if stop_requested():
                    return done
            ids = (idx.image_item_ids if modality == "image" else idx.text_item_ids)[first_row : first_row + rows]
            write_companion(idx.cache_dir, teacher_id, shard_id, modality, emb, ids)
    return done


def _image_inputs(loaded, idx, reader, lo: int, hi: int):
    """The new teacher's inputs of global image rows lo..hi-1: view 0 through its preprocessing, a
    cached view cropped and flipped as recorded (as stage one builds them)."""
    import torch

    from dimefm_pipeline.formats.images import apply_view, decode_image, view_transform
    from dimefm_pipeline.store.tables import Locator

    pp = loaded.preprocess_cfg
    norm = view_transform(loaded.image_size, pp["mean"], pp["std"])
    out, last = [], (None, None)
    for row, loc in zip(range(lo, hi), Locator.rows(idx.image_locs.take(np.arange(lo, hi)))):
        where = (loc.loc_file, loc.offset, loc.length, loc.payload_hash)  # an image's views share their bytes
        try:
            img = last[1] if last[0] == where else decode_image(reader.read(row, loc), None)
            last = (where, img)
        except BadItem as exc:
            raise DimefmError(f"image row {row} cannot be read again ({exc}); its shard is left without this teacher's "
                              "rows: if the data moved, dimefm sources relocate, then run this command again") from None
        out.append(loaded.preprocess(img) if loc.view == 0 else norm(apply_view(img, loc.box, loc.flip, loaded.image_size)))
    return torch.stack(out)


def _shard_texts(idx):
    """Sentences by global text row, as stage one gave them to its tokenizer, one shard read at a time."""
    from dimefm_pipeline.store.tokens import shard_texts

    starts = np.concatenate([[0], np.cumsum([s[2] for s in idx.text_shards])])
    cache: dict = {}

    def get(lo: int, hi: int) -> list[str]:
        out = []
        for row in range(lo, hi):
            s = int(np.searchsorted(starts, row, side="right")) - 1
            if s not in cache:
                cache.clear()
                cache[s] = shard_texts(idx.text_shards[s][1])
            out.append(cache[s][row - starts[s]])
        return out

    return get


def _text_inputs(loaded, texts, lo: int, hi: int):
    return loaded.tokenizer(texts(lo, hi))


def _forward(loaded, modality: str, inputs, device, precision: str) -> np.ndarray:
    import torch

    from dimefm_pipeline.encode.loop import autocast

    encode = loaded.model.encode_image if modality == "image" else loaded.model.encode_text
    with torch.no_grad(), autocast(precision, device):
        feats = encode(inputs.to(device))
    return torch.nn.functional.normalize(feats.float(), dim=-1).to(torch.float16).cpu().numpy()


def _ingest_markers(man: Manifest, teacher_id: int, run_id: int) -> int:
    """Record every finished companion whose marker is waiting, then remove the markers; a companion
    that no longer fits its shard is dropped (the shard is then encoded again)."""
    markers = companion_markers(man.cache_dir, teacher_id)
    with man.transaction():
        outcome = [named.record_companion(man, teacher_id, marker["shard_id"], marker, run_id) for _, marker in markers]
    for (path, marker), what in zip(markers, outcome):
        if what == "stale":
            for name in (marker["path"], marker["parquet_path"]):
                (man.cache_dir / name).unlink(missing_ok=True)
        path.unlink()
    return outcome.count("recorded")


def _commit(cache: str, teacher_id: int, run_id: int, status: str, seconds: float) -> int:
    with Manifest(cache, wait=lock_wait()) as man:
        n = _ingest_markers(man, teacher_id, run_id)
        catalog.refresh_relations(man)
        catalog.end_run(man, run_id, status, metrics={"shards": n, "seconds": round(seconds, 1)})
    return n
