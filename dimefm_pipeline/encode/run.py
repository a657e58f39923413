"""Stage one: run the frozen teacher once over image or sentence sources and cache fp16 embeddings.

Under torchrun every rank encodes a disjoint set of units and writes its shards and a commit marker
per unit; rank 0 alone opens the manifest and commits markers into it (during the run and again at
start-up, which is how a killed run recovers the units it finished). Units are deterministic, so a
rerun redoes exactly the units that have no marker: no item is missing and none is cached twice.

Rank 0 holds the manifest only for short transactions (planning, a commit every few seconds, the
end), so `dimefm sql`, `info` and distill runs can read and write it meanwhile; one encode at a time
per cache is enforced by an OS lock on `CACHE/.encode.lock`, released even when the process is
killed.
"""

from __future__ import annotations

import os
import shutil
import signal
import sys
import time
from dataclasses import asdict
from pathlib import Path

from dimefm_pipeline.core import models
from dimefm_pipeline.core.errors import DimefmError, Interrupted, write_failed
from dimefm_pipeline.core.locks import hold
from dimefm_pipeline.core.signals import stop_on_signals, stop_requested
from dimefm_pipeline.encode.checks import check_early, remove_empty_folders
from dimefm_pipeline.encode.config import EncodeConfig, EncodeSummary
from dimefm_pipeline.encode.planning import plan_sources
from dimefm_pipeline.encode.progress import RankProgress
from dimefm_pipeline.formats import resolve_sources
from dimefm_pipeline.formats.accounting import check_unit
from dimefm_pipeline.store.manifest import Manifest, TeacherInfo, catalog, commits, lock_wait
from dimefm_pipeline.store.shards import read_markers

COMMIT_EVERY = 2.0  # seconds between manifest commits of finished units (their markers are durable before)


def encode(cfg: EncodeConfig, *, command: str = "", progress: bool = True) -> EncodeSummary | None:
    """Run stage one; returns the summary on rank 0 (None on other ranks). SIGINT or SIGTERM stops it
    after the current batch: finished units are committed and `Interrupted` says how to resume."""
    made = check_early(cfg)  # mistakes in paths fail before torch loads
    try:
        return _encode(cfg, command, progress)
    except BaseException:
        if made is not None:  # a command that failed before caching anything leaves no new folder behind
            remove_empty_folders(Path(cfg.cache).resolve().parent, made)
        raise


def _encode(cfg: EncodeConfig, command: str, progress: bool) -> EncodeSummary | None:
    import torch

    from dimefm_pipeline.core import distributed as dist
    from dimefm_pipeline.encode.imports import open_on_rank

    rank, world, _, device = dist.init_distributed()
    threads = torch.get_num_threads()
    if device.type == "cpu":
        dist.cpu_threads_beside_workers(cfg.workers)
    lock = None
    try:
        with stop_on_signals():
            result = None
            if rank == 0:
                try:
                    lock, cache_dir, checked, run_id, planned, imported, check = _prepare(cfg, command, world, device)
                    prefixes = imported.prefixes if imported is not None else None
                    result = ("ok", checked.spec, run_id, planned.pending, planned.skipped, str(cache_dir), prefixes)
                except DimefmError as exc:
                    result = ("error", str(exc))
            result = dist.broadcast_object(result)
            if result[0] == "error":
                raise DimefmError(result[1])
            _, spec, run_id, pending, skipped, cache_dir, prefixes = result
            if rank == 0:
                loaded = checked  # built once to check it against the manifest; reused, not rebuilt
                loaded.model.to(device)
            else:
                loaded = models.build(spec, device=str(device), quiet=True)
                imported = open_on_rank(cfg.embeddings_from, cfg.modality, loaded.embed_dim, prefixes)
            summary = EncodeSummary(run_id, units_skipped=skipped)
            if rank == 0:
                summary.errors, summary.other_files = planned.listed_errors, planned.other_files
                summary.per_source = planned.sources
                summary.import_check = check
            _encode_pending(cfg, loaded, pending, Path(cache_dir), summary, rank, world, device, progress, imported)
            stopped = stop_requested()
        if stopped:
            raise Interrupted(stopped, f"encode stopped by {signal.Signals(stopped).name}; the units it finished are "
                                       f"committed. Resume with: {command or 'the same dimefm encode command'}")
        return summary if rank == 0 else None
    finally:
        if lock is not None:
            lock.release()
        torch.set_num_threads(threads)
        dist.destroy()


def _encode_pending(cfg, loaded, pending, cache_dir: Path, summary: EncodeSummary, rank: int, world: int, device,
                    progress: bool, imported) -> None:
    """Every rank: its share of the pending units; rank 0 commits them and ends the run (complete,
    interrupted by a signal, or failed)."""
    from dimefm_pipeline.core import distributed as dist
    from dimefm_pipeline.encode.loop import encode_units

    committer = Committer(cfg.cache, summary.run_id, summary) if rank == 0 else None
    t0 = time.time()
    status = "failed"
    try:
        meter = RankProgress(cache_dir, rank, world, pending)
        encode_units(pending[rank::world], loaded, cfg, cache_dir, rank, device, committer, progress and rank == 0, meter,
                     imported)
        dist.barrier()
        if committer is not None:
            meter.close()
            status = "interrupted" if stop_requested() else "complete"
            committer(force=True, then=lambda man: _finish(man, summary, t0, status))
        status = "ended"
        if summary.empty and len(summary.empty) == len(summary.per_source) and not stop_requested():
            raise DimefmError(f"nothing to encode: {'; '.join(f'{u} holds no items' for u in summary.empty)}")
        for uri in summary.empty:
            print(f"warning: {uri} holds no items: nothing was encoded from it", file=sys.stderr, flush=True)
    finally:
        if committer is not None and status != "ended":
            summary.seconds = time.time() - t0
            _end_failed(cfg.cache, summary.run_id, summary)


def _finish(man: Manifest, summary: EncodeSummary, t0: float, status: str) -> None:
    """Rank 0, when every rank is done or stopped: the accounting of every source, per-source counts,
    the SQL views, the run's end."""
    totals = {}
    for sid, uri, listed, cached, recorded, duplicates in commits.accounts(man):
        check_unit(f"source {sid} ({uri})", listed, cached, recorded, duplicates)
        totals[sid] = listed
    commits.count_repeated_keys(man)
    catalog.refresh_relations(man)
    summary.seconds = time.time() - t0
    catalog.end_run(man, summary.run_id, status, metrics=_metrics(summary))
    summary.empty = [uri for sid, uri in summary.per_source if totals.get(sid, 1) == 0]


def _prepare(cfg: EncodeConfig, command: str, world: int, device):
    """Rank 0: open the manifest, check the teacher, recover markers, plan pending units, and check
    and record teacher rows to import."""
    from dimefm_pipeline.encode.imports import prepare_import

    specs = resolve_sources(cfg.sources, cfg.modality, cfg.source_options)
    created = not Path(cfg.cache).exists()
    man = Manifest(cfg.cache, create=True, cache_dir=cfg.cache_dir, wait=lock_wait())
    lock = None
    try:
        lock = writer_lock(man.cache_dir)
        loaded = _checked_teacher(cfg, man)
        run_id = catalog.start_run(man, f"encode-{cfg.modality}", command, asdict(cfg), world)
        recovered = 0
        for _, commit in read_markers(man.cache_dir):  # units finished by a run that died before committing
            recovered += commits.ingest(man, commit, run_id)
        try:
            with man.transaction():  # a refused source (or import) leaves no other source of the command registered
                planned, files_of = plan_sources(cfg, man, specs, run_id)
                imported = check = None
                if cfg.embeddings_from and planned.pending:
                    imported, check = prepare_import(cfg.embeddings_from, cfg.modality, loaded, planned.pending,
                                                     files_of, device, cfg.precision)
                    catalog.add_import(man, run_id, cfg.modality, str(Path(cfg.embeddings_from).resolve()),
                                       len(imported.parts), imported.total, check.items, check.min_cosine)
        except BaseException:
            if recovered:
                catalog.end_run(man, run_id, "failed")
            else:  # refused before doing anything: no run to record
                catalog.drop_run(man, run_id)
            raise
        cache_dir = man.cache_dir
        man.close()
        return lock, cache_dir, loaded, run_id, planned, imported, check
    except BaseException:
        man.close()
        if lock is not None:
            lock.release()
        if created:  # nothing was cached: leave no empty manifest behind
            _remove_new_cache(man.path, man_dir=cfg.cache_dir)
        raise


def _checked_teacher(cfg: EncodeConfig, man: Manifest):
    """The teacher of the command (or the manifest's), built, and checked against the manifest's."""
    recorded = catalog.teacher(man)
    if cfg.teacher is None:
        if recorded is None:
            raise DimefmError(f"{cfg.cache} has no teacher yet: pass --teacher (and --pretrained)")
        spec = models.resolve_spec(recorded.arch, recorded.pretrained, config=recorded.config)
    else:
        spec = models.resolve_spec(cfg.teacher, cfg.pretrained)
    if spec.pretrained == models.RANDOM:
        print(f"warning: teacher {spec.arch} has random weights (--pretrained random): its embeddings carry no meaning; "
              "fine for tests and benchmarks, not for a student", file=sys.stderr, flush=True)
    loaded = models.build(spec, quiet=True)
    catalog.check_teacher(man, TeacherInfo.of_model(loaded))
    if cfg.modality == "image":
        catalog.check_views(man, cfg.views, cfg.view_augment, cfg.view_seed)
    return loaded


def writer_lock(cache_dir: Path):
    """The cache's stage-one lock (held for the whole encode); a second encode fails at once."""
    if cache_dir.is_dir() and not os.access(cache_dir, os.W_OK):
        raise DimefmError(f"cannot write to the cache folder {cache_dir}: permission denied")
    try:
        cache_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise write_failed(exc, "the cache folder", "choose another --cache") from None
    return hold(cache_dir / ".encode.lock", "another dimefm encode is writing to this cache: one encode at a time")


class Committer:
    """Rank 0: moves durable commit markers into the manifest in short transactions."""

    def __init__(self, cache: str, run_id: int, summary: "EncodeSummary"):
        self.cache, self.run_id, self.summary, self.last = cache, run_id, summary, 0.0

    def __call__(self, *, force: bool = False, then=None) -> None:
        if not force and time.time() - self.last < COMMIT_EVERY:
            return
        with Manifest(self.cache, wait=lock_wait()) as man:
            _commit_pending(man, self.run_id, self.summary)
            if then is not None:
                then(man)
        self.last = time.time()


def _remove_new_cache(path: Path, man_dir: str | None) -> None:
    for p in (path, path.with_name(path.name + ".wal")):
        p.unlink(missing_ok=True)
    cache_dir = Path(man_dir) if man_dir else path.with_suffix("")
    if cache_dir.is_dir() and not any(cache_dir.rglob("*.npy")):
        shutil.rmtree(cache_dir, ignore_errors=True)


def _end_failed(cache: str, run_id: int, summary: "EncodeSummary") -> None:
    """Commit what finished and mark the run failed (best effort: the original error is what matters)."""
    try:
        with Manifest(cache, wait=lock_wait()) as man:
            _commit_pending(man, run_id, summary)
            catalog.end_run(man, run_id, "failed", metrics=_metrics(summary))
    except Exception:  # noqa: BLE001 - never hide the error that ended the run
        pass


def _metrics(s: EncodeSummary) -> dict:
    return {k: getattr(s, k) for k in ("units_done", "units_skipped", "items", "errors", "duplicates", "truncated", "seconds")}


def _commit_pending(man, run_id: int, summary: EncodeSummary) -> None:
    """Rank 0: commit every marker present (its own and other ranks'), then drop the markers."""
    for path, commit in read_markers(man.cache_dir):
        if commits.ingest(man, commit, run_id):
            summary.items += commit.items
            summary.errors += len(commit.errors)
            summary.duplicates += commit.duplicates
            summary.truncated += commit.truncated
            summary.imported += commit.imported
            summary.units_done += 1
        path.unlink(missing_ok=True)
