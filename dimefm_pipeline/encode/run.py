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
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from dimefm_pipeline.core.errors import DimefmError
from dimefm_pipeline.formats.guards import ITEM_TIMEOUT, LOADER_TIMEOUT, guarded

DEFAULT_SHARD_SIZE = 65_536
PRECISIONS = ("auto", "fp32", "fp16", "bf16")
COMMIT_EVERY = 2.0  # seconds between manifest commits of finished units (their markers are durable before)


@dataclass(frozen=True)
class EncodeConfig:
    """Options of `dimefm encode images|texts`."""

    modality: str  # "image" or "text"
    sources: tuple[str, ...]
    cache: str  # manifest path (.duckdb)
    cache_dir: str | None = None  # shard folder; default: beside the manifest, named after it
    teacher: str | None = None  # open_clip name, config JSON, or "world"; default: the manifest's
    pretrained: str | None = None  # tag, checkpoint path or "random"
    batch_size: int = 256
    workers: int = 4
    shard_size: int = DEFAULT_SHARD_SIZE
    precision: str = "auto"  # auto (fp16 autocast on CUDA, fp32 on CPU) | fp32 | fp16 | bf16
    source_options: dict = field(default_factory=dict)  # text_field, text_column, key_column, image_column
    item_timeout: float = ITEM_TIMEOUT  # seconds to read and decode one item before it is skipped as timed out
    views: int = 1  # embeddings cached per image: view 0 un-augmented, 1..K-1 seeded crops and flips
    view_augment: str = "reference"  # how views 1..K-1 are drawn: reference | light | a JSON file
    view_seed: int = 0  # seed of the views' crops and flips

    def __post_init__(self):
        if self.modality not in ("image", "text"):
            raise DimefmError(f"modality must be image or text, not {self.modality}")
        if self.batch_size < 1 or self.shard_size < 1 or self.workers < 0:
            raise DimefmError("--batch-size and --shard-size must be >= 1 and --workers >= 0")
        if self.precision not in PRECISIONS:
            raise DimefmError(f"--precision must be one of {', '.join(PRECISIONS)}, not {self.precision!r}")
        if self.item_timeout <= 0:
            raise DimefmError("--item-timeout must be positive")
        if self.views < 1 or (self.views > 1 and self.modality != "image"):
            raise DimefmError("--views must be at least 1, and only images have views")
        if not self.sources:
            raise DimefmError("give at least one source")


@dataclass
class EncodeSummary:
    run_id: int
    units_done: int = 0
    units_skipped: int = 0
    items: int = 0
    errors: int = 0
    duplicates: int = 0
    truncated: int = 0
    seconds: float = 0.0
    per_source: list = field(default_factory=list)
    other_files: dict = field(default_factory=dict)  # extension -> files of image folders that are not images


def _teacher_info(loaded):
    from dimefm_pipeline.store.manifest import TeacherInfo

    return TeacherInfo(loaded.spec.arch, loaded.spec.pretrained, loaded.fingerprint, loaded.embed_dim,
                       loaded.image_size, loaded.context_length, loaded.preprocess_cfg, loaded.spec.config)


def _prepare(cfg: EncodeConfig, command: str, world: int):
    """Rank 0: open the manifest, check the teacher, recover markers, plan pending units."""
    from dimefm_pipeline.core import models
    from dimefm_pipeline.store.shards import read_markers
    from dimefm_pipeline.store.manifest import Manifest, lock_wait
    from dimefm_pipeline.formats import plan_source, resolve_sources

    specs = resolve_sources(cfg.sources, cfg.modality, cfg.source_options)
    created = not Path(cfg.cache).exists()
    man = Manifest(cfg.cache, create=True, cache_dir=cfg.cache_dir, wait=lock_wait())
    lock = None
    try:
        lock = writer_lock(man.cache_dir)
        recorded = man.teacher()
        if cfg.teacher is None:
            if recorded is None:
                raise DimefmError(f"{cfg.cache} has no teacher yet: pass --teacher (and --pretrained)")
            spec = models.resolve_spec(recorded.arch, recorded.pretrained, config=recorded.config)
        else:
            spec = models.resolve_spec(cfg.teacher, cfg.pretrained)
        loaded = models.build(spec, quiet=True)
        man.check_teacher(_teacher_info(loaded))
        if cfg.modality == "image":
            man.check_views(cfg.views, cfg.view_augment, cfg.view_seed)
        run_id = man.start_run(f"encode-{cfg.modality}", command, asdict(cfg), world)
        for _, commit in read_markers(man.cache_dir):  # units finished by a run that died before committing
            man.ingest(commit, run_id)
        seen = man.text_hashes() if cfg.modality == "text" else None
        pending, skipped, listed_errors, other_files = [], 0, 0, {}
        plans = []
        for s in specs:
            known = man.source_row(s.modality, s.uri)
            shard_size = known[1] if known else cfg.shard_size
            plans.append((s, plan_source(s, known[0] if known else 0, shard_size, seen), shard_size, known))
        man.check_overlap([(s, plan) for s, plan, _, known in plans if known is None])
        for s, plan, shard_size, _ in plans:
            sid, new = man.register_source(s, plan, shard_size, run_id)
            if new:
                listed_errors += len(plan.problems)
                for ext, n in plan.other_files.items():
                    other_files[ext] = other_files.get(ext, 0) + n
            done = man.completed_units(sid)
            for u in plan.units:
                if u.index in done:
                    skipped += 1
                else:
                    pending.append(_with_source(u, sid))
        cache_dir = man.cache_dir
        man.close()
        return lock, cache_dir, loaded, run_id, pending, skipped, listed_errors, other_files
    except BaseException:
        man.close()
        if lock is not None:
            lock.close()
        if created:  # nothing was cached: leave no empty manifest behind
            _remove_new_cache(man.path, man_dir=cfg.cache_dir)
        raise


def writer_lock(cache_dir: Path):
    """The cache's stage-one lock (an open file holding an exclusive flock); a second encode fails at once."""
    import fcntl

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
        from dimefm_pipeline.store.manifest import Manifest, lock_wait

        with Manifest(self.cache, wait=lock_wait()) as man:
            _commit_pending(man, self.run_id, self.summary)
            if then is not None:
                then(man)
        self.last = time.time()


def _remove_new_cache(path: Path, man_dir: str | None) -> None:
    import shutil

    for p in (path, path.with_name(path.name + ".wal")):
        p.unlink(missing_ok=True)
    cache_dir = Path(man_dir) if man_dir else path.with_suffix("")
    if cache_dir.is_dir() and not any(cache_dir.rglob("*.npy")):
        shutil.rmtree(cache_dir, ignore_errors=True)


def _with_source(unit, source_id):
    from dataclasses import replace

    return replace(unit, source_id=source_id)


def encode(cfg: EncodeConfig, *, command: str = "", progress: bool = True) -> EncodeSummary | None:
    """Run stage one; returns the summary on rank 0 (None on other ranks)."""
    _check_early(cfg)  # mistakes in paths fail before torch loads
    import torch

    from dimefm_pipeline.core import distributed as dist
    from dimefm_pipeline.core import models

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
                lock, cache_dir, checked, run_id, pending, skipped, listed, other = _prepare(cfg, command, world)
                result = ("ok", checked.spec, run_id, pending, skipped, str(cache_dir))
            except DimefmError as exc:
                result = ("error", str(exc))
        result = dist.broadcast_object(result)
        if result[0] == "error":
            raise DimefmError(result[1])
        _, spec, run_id, pending, skipped, cache_dir = result
        if rank == 0:
            loaded = checked  # built once to check it against the manifest; reused, not rebuilt
            loaded.model.to(device)
        else:
            loaded = models.build(spec, device=str(device), quiet=True)
        mine = pending[rank::world]
        summary = EncodeSummary(run_id, units_skipped=skipped)
        if rank == 0:
            summary.errors, summary.other_files = listed, other
            committer = Committer(cfg.cache, run_id, summary)
        failed = True
        try:
            meter = RankProgress(Path(cache_dir), rank, world, pending)
            _encode_units(mine, loaded, cfg, Path(cache_dir), rank, device, committer, summary, progress and rank == 0, meter)
            dist.barrier()
            if committer is not None:
                meter.close()

                def finish(man):
                    man.count_repeated_keys()
                    man.refresh_views()
                    summary.seconds = time.time() - t0
                    man.end_run(run_id, "complete", metrics=_metrics(summary))

                committer(force=True, then=finish)
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


def _end_failed(cache: str, run_id: int, summary: "EncodeSummary") -> None:
    """Commit what finished and mark the run failed (best effort: the original error is what matters)."""
    from dimefm_pipeline.store.manifest import Manifest, lock_wait

    try:
        with Manifest(cache, wait=lock_wait()) as man:
            _commit_pending(man, run_id, summary)
            man.end_run(run_id, "failed", metrics=_metrics(summary))
    except Exception:  # noqa: BLE001 - never hide the error that ended the run
        pass


def _check_early(cfg: EncodeConfig) -> None:
    """The cheap checks of a command (sources resolve to readable files, the manifest's folder can be
    made), before anything heavy is imported: a typo costs a fraction of a second."""
    from dimefm_pipeline.formats import resolve_sources
    from dimefm_pipeline.formats.files import file_entries

    for spec in resolve_sources(cfg.sources, cfg.modality, cfg.source_options):
        file_entries(spec.root, spec.files)  # the files of a pattern (a folder is listed by planning)
    path = Path(cfg.cache)
    if not path.exists():
        if path.suffix != ".duckdb":
            raise DimefmError(f"manifest path must end in .duckdb: {cfg.cache}")
        try:
            path.resolve().parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise DimefmError(f"cannot create the manifest's folder {path.resolve().parent}: {exc.strerror}") from None


def _metrics(s: EncodeSummary) -> dict:
    return {k: getattr(s, k) for k in ("units_done", "units_skipped", "items", "errors", "duplicates", "truncated", "seconds")}


def _commit_pending(man, run_id: int, summary: EncodeSummary) -> None:
    """Rank 0: commit every marker present (its own and other ranks'), then drop the markers."""
    from dimefm_pipeline.store.shards import read_markers

    for path, commit in read_markers(man.cache_dir):
        if man.ingest(commit, run_id):
            summary.items += commit.items
            summary.errors += len(commit.errors)
            summary.duplicates += commit.duplicates
            summary.truncated += commit.truncated
            summary.units_done += 1
        path.unlink(missing_ok=True)


class RankProgress:
    """Records read so far by every rank, for one progress display on rank 0: each rank writes its
    count to `CACHE/_progress/rank-R.json` every few seconds; rank 0 adds the others' to its own.
    The total is the planned number of records when every unit's is known (folders, Parquet, sentence
    files), else the number of units."""

    EVERY = 5.0  # seconds between writes (and reads)

    def __init__(self, cache_dir: Path, rank: int, world: int, pending: list):
        from dimefm_pipeline.formats import format_named

        self.folder, self.rank, self.world = cache_dir / "_progress", rank, world
        counts = [format_named(u.fmt).planned_records(u) for u in pending]
        self.by_records = all(c is not None for c in counts)
        self.total = sum(counts) if self.by_records else len(pending)
        self.mine = {"records": 0, "items": 0, "units": 0}
        self.others = {"records": 0, "items": 0, "units": 0}
        self._last = 0.0
        self.folder.mkdir(parents=True, exist_ok=True)
        (self.folder / f"rank-{rank}.json").unlink(missing_ok=True)

    def add(self, *, records: int = 0, items: int = 0, units: int = 0, refresh: bool = False) -> None:
        self.mine["records"] += records
        self.mine["items"] += items
        self.mine["units"] += units
        if time.time() - self._last >= self.EVERY or units or refresh:
            self._last = time.time()
            if self.rank:
                _write_json(self.folder / f"rank-{self.rank}.json", self.mine)
            elif self.world > 1:
                self.others = {"records": 0, "items": 0, "units": 0}
                for r in range(1, self.world):
                    for k, v in _read_json(self.folder / f"rank-{r}.json").items():
                        self.others[k] += v

    def flush(self) -> None:
        """This rank's last count (the other ranks' display may lag it by up to EVERY seconds)."""
        if self.rank:
            _write_json(self.folder / f"rank-{self.rank}.json", self.mine)

    def close(self) -> None:
        import shutil

        shutil.rmtree(self.folder, ignore_errors=True)

    def done(self) -> tuple[float, int]:
        """(completed in the display's unit, items cached) over all ranks."""
        key = "records" if self.by_records else "units"
        return self.mine[key] + self.others[key], self.mine["items"] + self.others["items"]


def _write_json(path: Path, data: dict) -> None:
    import json

    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data))
    os.replace(tmp, path)


def _read_json(path: Path) -> dict:
    import json

    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def _encode_units(units, loaded, cfg, cache_dir, rank, device, committer, summary, show, meter):
    import numpy as np
    import torch
    from torch.utils.data import DataLoader

    from dimefm_pipeline.core import distributed as dist
    from dimefm_pipeline.store.shards import UnitWriter
    from dimefm_pipeline.encode.batches import UnitBatches
    from dimefm_pipeline.core.progress import progress_bar
    from dimefm_pipeline.formats.base import PACKED

    views = None
    if cfg.modality == "image" and cfg.views > 1:
        from dimefm_pipeline.formats.views import ViewAugment

        pp = loaded.preprocess_cfg
        views = (cfg.views, ViewAugment.named(cfg.view_augment), cfg.view_seed, loaded.image_size, pp["mean"], pp["std"])
    ds = UnitBatches(units, cfg.batch_size, loaded.preprocess, loaded.tokenizer, loaded.context_length, cfg.item_timeout,
                     views)
    # read blocks (not units) are dealt to workers, so one large folder unit still keeps every worker busy
    workers = cfg.workers if units else 0
    loader = DataLoader(ds, batch_size=None, num_workers=workers, pin_memory=device.type == "cuda",
                        prefetch_factor=4 if workers else None, persistent_workers=False,
                        timeout=LOADER_TIMEOUT if workers else 0)
    model = loaded.model
    encode_fn = model.encode_image if cfg.modality == "image" else model.encode_text
    amp = _autocast(cfg.precision, device)
    open_units: dict = {}  # (source, unit) -> [writer, blocks finished]
    items = 0
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
            if batch.inputs is not None:
                with torch.no_grad(), amp:
                    feats = encode_fn(batch.inputs.to(device, non_blocking=True))
                emb = torch.nn.functional.normalize(feats.float(), dim=-1).to(torch.float16).cpu().numpy()
                cols = {"key": batch.keys, "pos": batch.pos}
                if cfg.modality == "text":
                    cols.update(file=batch.files, text=batch.texts, truncated=batch.truncated,
                                text_hash=np.asarray(batch.hashes, np.int64))
                else:
                    offsets = list(batch.offsets)
                    for i, b in enumerate(batch.packed):
                        if b is not None:  # packed once per image; its other views share the offset
                            offsets[i] = writer.add_packed(b)
                        elif i and batch.views[i] and batch.packed[i - batch.views[i]] is not None:
                            offsets[i] = offsets[i - batch.views[i]]
                    packed = [batch.packed[i - v] is not None for i, v in enumerate(batch.views)]
                    loc_file = [PACKED if p else f for p, f in zip(packed, batch.files)]
                    boxes = np.asarray(batch.boxes, dtype=np.int64).reshape(-1, 5)
                    cols.update(file=batch.files, loc_file=loc_file, offset=offsets, length=batch.lengths,
                                payload_hash=batch.payload_hashes, view=batch.views, crop_x0=boxes[:, 0],
                                crop_y0=boxes[:, 1], crop_x1=boxes[:, 2], crop_y1=boxes[:, 3], flip=boxes[:, 4])
                writer.add(emb, **cols)
                items += len(batch.keys) if cfg.modality == "text" else batch.views.count(0)
            writer.commit.errors.extend(batch.errors)
            writer.commit.duplicates += batch.duplicates
            writer.commit.truncated += sum(batch.truncated)
            state[1] += batch.last
            finished = state[1] == batch.blocks
            if finished:
                writer.finish()
                del open_units[(u.source_id, u.index)]
                if committer is not None:
                    committer()
            n_items = len(batch.keys) if cfg.modality == "text" else batch.views.count(0)
            meter.add(records=n_items + len(batch.errors) + batch.duplicates, items=n_items, units=int(finished))
            done, all_items = meter.done()
            bar.update(task, completed=done, items=all_items, rate=all_items / max(time.time() - t0, 1e-9))
        meter.flush()
        dist.barrier()  # every rank's last count is written: the last line shows the whole run
        meter.add(units=0, refresh=True)
        done, all_items = meter.done()
        bar.update(task, completed=done, items=all_items, rate=all_items / max(time.time() - t0, 1e-9))
    if open_units:
        raise RuntimeError(f"{len(open_units)} unit(s) ended before all their read blocks arrived")


def _autocast(precision: str, device):
    import contextlib

    import torch

    if device.type != "cuda" or precision == "fp32":
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    return torch.autocast("cuda", dtype=dtype)
