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

import fcntl
import os
import shutil
import sys
import time
from dataclasses import asdict, replace
from pathlib import Path

from dimefm_pipeline.core import models
from dimefm_pipeline.core.errors import DimefmError
from dimefm_pipeline.encode.config import EncodeConfig, EncodeSummary
from dimefm_pipeline.encode.progress import RankProgress
from dimefm_pipeline.formats import plan_source, resolve_sources
from dimefm_pipeline.formats.files import file_entries
from dimefm_pipeline.formats.planner import SeenHashes
from dimefm_pipeline.store.manifest import Manifest, TeacherInfo, catalog, commits, lock_wait, sources
from dimefm_pipeline.store.shards import read_markers
from dimefm_pipeline.store.source_check import accept_touched

COMMIT_EVERY = 2.0  # seconds between manifest commits of finished units (their markers are durable before)


def encode(cfg: EncodeConfig, *, command: str = "", progress: bool = True) -> EncodeSummary | None:
    """Run stage one; returns the summary on rank 0 (None on other ranks)."""
    made = _check_early(cfg)  # mistakes in paths fail before torch loads
    try:
        return _encode(cfg, command, progress)
    except BaseException:
        if made is not None:  # a command that failed before caching anything leaves no new folder behind
            _remove_empty_folders(Path(cfg.cache).resolve().parent, made)
        raise


def _encode(cfg: EncodeConfig, command: str, progress: bool) -> EncodeSummary | None:
    import torch

    from dimefm_pipeline.core import distributed as dist
    from dimefm_pipeline.encode.imports import open_on_rank
    from dimefm_pipeline.encode.loop import encode_units

    rank, world, _, device = dist.init_distributed()
    threads = torch.get_num_threads()
    if device.type == "cpu":
        dist.cpu_threads_beside_workers(cfg.workers)
    lock = committer = None
    t0 = time.time()
    try:
        result = None
        if rank == 0:
            try:
                lock, cache_dir, checked, run_id, pending, skipped, listed, other, imported, check = _prepare(
                    cfg, command, world, device)
                prefixes = imported.prefixes if imported is not None else None
                result = ("ok", checked.spec, run_id, pending, skipped, str(cache_dir), prefixes)
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
        mine = pending[rank::world]
        summary = EncodeSummary(run_id, units_skipped=skipped)
        if rank == 0:
            summary.errors, summary.other_files = listed, other
            summary.import_check = check
            committer = Committer(cfg.cache, run_id, summary)
        failed = True
        try:
            meter = RankProgress(Path(cache_dir), rank, world, pending)
            encode_units(mine, loaded, cfg, Path(cache_dir), rank, device, committer, progress and rank == 0, meter,
                         imported)
            dist.barrier()
            if committer is not None:
                meter.close()
                committer(force=True, then=lambda man: _finish(man, run_id, summary, t0))
            failed = False
        finally:
            if committer is not None and failed:
                summary.seconds = time.time() - t0
                _end_failed(cfg.cache, run_id, summary)
        return summary if rank == 0 else None
    finally:
        if lock is not None:
            lock.close()
        torch.set_num_threads(threads)
        dist.destroy()


def _finish(man: Manifest, run_id: int, summary: EncodeSummary, t0: float) -> None:
    """Rank 0, when every rank is done: per-source counts, the SQL views, the run's end."""
    commits.count_repeated_keys(man)
    catalog.refresh_relations(man)
    summary.seconds = time.time() - t0
    catalog.end_run(man, run_id, "complete", metrics=_metrics(summary))


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
                *planned, files_of = _plan(cfg, man, specs, run_id)
                imported = check = None
                if cfg.embeddings_from and planned[0]:
                    imported, check = prepare_import(cfg.embeddings_from, cfg.modality, loaded, planned[0], files_of,
                                                     device, cfg.precision)
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
        return (lock, cache_dir, loaded, run_id, *planned, imported, check)
    except BaseException:
        man.close()
        if lock is not None:
            lock.close()
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
    loaded = models.build(spec, quiet=True)
    if spec.pretrained == models.RANDOM:
        print(f"warning: teacher {spec.arch} has random weights (--pretrained random): its embeddings carry no meaning; "
              "fine for tests and benchmarks, not for a student", file=sys.stderr, flush=True)
    catalog.check_teacher(man, TeacherInfo.of_model(loaded))
    if cfg.modality == "image":
        catalog.check_views(man, cfg.views, cfg.view_augment, cfg.view_seed)
    return loaded


def _plan(cfg: EncodeConfig, man: Manifest, specs, run_id: int):
    """Plan and register every source: (pending units, units done before, errors found while listing,
    files of image folders that are not images)."""
    seen = SeenHashes(sources.text_hashes(man)) if cfg.modality == "text" else None
    pending, skipped, listed_errors, other_files, files_of = [], 0, 0, {}, {}
    plans = []
    for s in specs:
        known = sources.source_row(man, s.modality, s.uri)
        shard_size = known[1] if known else cfg.shard_size
        plans.append((s, plan_source(s, known[0] if known else 0, shard_size, seen), shard_size, known))
    sources.check_overlap(man, [(s, plan) for s, plan, _, known in plans if known is None])
    for s, plan, shard_size, _ in plans:
        sid, new, touched = sources.register_source(man, s, plan, shard_size, run_id)
        accept_touched(man, sid, s, plan, touched)
        if new:
            listed_errors += len(plan.problems)
            for ext, n in plan.other_files.items():
                other_files[ext] = other_files.get(ext, 0) + n
        files_of[sid] = [e.path for e in plan.files] if cfg.embeddings_from else []
        done = sources.completed_units(man, sid)
        for u in plan.units:
            if u.index in done:
                skipped += 1
            else:
                pending.append(replace(u, source_id=sid))
    return pending, skipped, listed_errors, other_files, files_of


def writer_lock(cache_dir: Path):
    """The cache's stage-one lock (an open file holding an exclusive flock); a second encode fails at once."""
    cache_dir.mkdir(parents=True, exist_ok=True)
    f = open(cache_dir / ".encode.lock", "a+")
    try:
        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        f.seek(0)
        holder = f.read().strip() or "another process"
        f.close()
        raise DimefmError(f"another dimefm encode ({holder}) is writing to this cache: one encode at a time") from None
    f.seek(0)
    f.truncate()
    f.write(f"pid {os.getpid()}")
    f.flush()
    return f


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


def _check_early(cfg: EncodeConfig) -> Path | None:
    """The cheap checks of a command (sources resolve to readable files, a new manifest has a teacher
    and a folder that can be made), before anything heavy is imported: a typo costs a fraction of a
    second. Returns the topmost folder made for a new manifest, if any."""
    for spec in resolve_sources(cfg.sources, cfg.modality, cfg.source_options):
        file_entries(spec.root, spec.files)  # the files of a pattern (a folder is listed by planning)
    path = Path(cfg.cache)
    if path.exists():
        return None
    if path.suffix != ".duckdb":
        raise DimefmError(f"manifest path must end in .duckdb: {cfg.cache}")
    if cfg.teacher is None:
        raise DimefmError(f"no manifest at {cfg.cache}: check the path to add to an existing cache, or pass --teacher "
                          "(and --pretrained) to start a new one")
    folder = path.resolve().parent
    made = next((f for f in reversed([folder, *folder.parents]) if not f.exists()), None)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DimefmError(f"cannot create the manifest's folder {folder}: {exc.strerror}") from None
    return made


def _remove_empty_folders(folder: Path, top: Path) -> None:
    """Remove `folder` and its parents up to `top`, as long as they are empty."""
    while True:
        try:
            folder.rmdir()
        except OSError:
            return
        if folder == top:
            return
        folder = folder.parent


def _metrics(s: EncodeSummary) -> dict:
    return {k: getattr(s, k) for k in ("units_done", "units_skipped", "items", "errors", "duplicates", "truncated", "seconds")}


def _commit_pending(man, run_id: int, summary: EncodeSummary) -> None:
    """Rank 0: commit every marker present (its own and other ranks'), then drop the markers."""
    for path, commit in read_markers(man.cache_dir):
        if commits.ingest(man, commit, run_id):
            summary.items += commit.items
            summary.imported += commit.imported
            summary.errors += len(commit.errors)
            summary.duplicates += commit.duplicates
            summary.truncated += commit.truncated
            summary.units_done += 1
        path.unlink(missing_ok=True)
