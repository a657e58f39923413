"""What a distillation run records while it trains: metrics (CSV, manifest, progress bar), checkpoints,
images it could not read, and the run's row in the manifest. The training loop calls `after_step`."""

from __future__ import annotations

import contextlib
import csv
import errno
import json
import os
import shlex
import signal
import time
from pathlib import Path

from dimefm_pipeline.core import distributed as dist
from dimefm_pipeline.distill.config import DistillConfig
from dimefm_pipeline.core.errors import DimefmError, write_failed
from dimefm_pipeline.core.locks import hold
from dimefm_pipeline.core.signals import stop_requested
from dimefm_pipeline.store.manifest import catalog, record


def metrics_every() -> float:
    """Seconds between moves of logged metric rows into the manifest while a run trains, so that
    `dimefm sql` sees a live run (DIMEFM_METRICS_SECONDS, default 30; also at every checkpoint)."""
    try:
        return float(os.environ.get("DIMEFM_METRICS_SECONDS", "30"))
    except ValueError:
        return 30.0


def latest_checkpoint(out: Path) -> Path | None:
    ckpts = sorted((out / "checkpoints").glob("step_*.pt"))
    return ckpts[-1] if ckpts else None


def save_checkpoint(out: Path, step: int, model, opt, scaler, cfg: DistillConfig, keep: int = 2) -> Path:
    """Model, optimiser, scaler, the run's config and world size at `step` (the last `keep` are kept)."""
    import torch

    folder = out / "checkpoints"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"step_{step:08d}.pt"
    tmp = path.with_name(path.name + ".tmp")
    module = getattr(model, "module", model)
    try:
        with open(tmp, "wb") as f:  # a Python file: a failed write is an OSError naming its reason
            torch.save({"step": step, "model": module.state_dict(), "optimizer": opt.state_dict(),
                        "scaler": scaler.state_dict() if scaler is not None else None, "config": cfg.to_dict(),
                        "world": dist.world_size()}, f)
        tmp.replace(path)
    except (OSError, RuntimeError) as exc:  # torch reports a failed write as a RuntimeError around the OSError
        tmp.unlink(missing_ok=True)
        err = exc if isinstance(exc, OSError) else exc.__context__
        if not isinstance(err, OSError):
            err = OSError(errno.EIO, " ".join(str(exc).split())[:200])
        err.filename = str(path)
        raise write_failed(err, f"the checkpoint of step {step}", "free space, then continue with --resume from the "
                           "last checkpoint") from None
    for old in sorted(folder.glob("step_*.pt"))[:-keep]:
        old.unlink()
    return path


def load_checkpoint(out: Path, model, opt, scaler, device) -> tuple[int, dict, int | None]:
    """Restore model, optimiser and scaler from the latest checkpoint in `out`; returns its step,
    the config it was trained with and its world size."""
    import torch

    path = latest_checkpoint(out)
    if path is None:
        raise DimefmError(f"--resume: no checkpoint in {out / 'checkpoints'}")
    ckpt = torch.load(path, map_location=device, weights_only=True)
    model.load_state_dict(ckpt["model"])
    opt.load_state_dict(ckpt["optimizer"])
    if scaler is not None and ckpt.get("scaler"):
        scaler.load_state_dict(ckpt["scaler"])
    return int(ckpt["step"]), ckpt.get("config") or {}, ckpt.get("world")


class RunLog:
    """Per-step bookkeeping of one distill run on one rank (rank 0 writes, every rank checkpoints in step)."""

    def __init__(self, cfg: DistillConfig, job, *, rank: int, world: int, command: str, progress: bool):
        self.cfg, self.job, self.rank, self.world = cfg, job, rank, world
        self.out = Path(cfg.out)
        self.csv = self.out / "metrics.csv"
        self.rows: list[dict] = []
        self.failed: list[tuple[int, str]] = []  # (image row, reason) not yet in the manifest
        self.failed_total = 0
        self.final: dict = {}
        self.start_step = job.step
        self.images = 0
        self.last_good = latest_checkpoint(self.out)
        self.status = "failed"
        self.config_path = self.weights_path = None  # the student's files, once saved
        self.run_id = None
        self.stopped = 0  # the signal that stopped the run after its current step (0: none)
        self.t0 = self._flushed = time.time()
        self._progress, self._command = progress and rank == 0, command

    # ---- the run's start and end ------------------------------------------------------------------
    def __enter__(self):
        from dimefm_pipeline.core.progress import progress_bar

        if self.rank == 0:
            self.out.mkdir(parents=True, exist_ok=True)
            as_run = self.cfg.as_run(self.job.total, self.job.per_epoch)
            (self.out / "config.json").write_text(json.dumps(as_run, indent=2))
            _drop_csv_rows_after(self.csv, self.job.step)  # a resumed run rewrites the steps after its checkpoint
            self.run_id = record(self.cfg.cache, lambda m: catalog.start_run(m, "distill", self._command, as_run, self.world))
        self.run_id = dist.broadcast_object(self.run_id)
        self.tb = _tensorboard(self.cfg.tensorboard) if self.rank == 0 and self.cfg.tensorboard else None
        self._bar_cm = progress_bar(self._progress)
        self.bar = self._bar_cm.__enter__()
        self.task = self.bar.add_task("distill", total=self.job.total, completed=self.job.step, items=0, rate=0.0)
        return self

    def __exit__(self, exc_type, exc, tb):
        self._bar_cm.__exit__(exc_type, exc, tb)
        if self.tb is not None:
            self.tb.close()
        if exc_type is None:
            self.status = "complete" if self.job.step >= self.job.total else "interrupted" if self.stopped else "stopped"
        self._flush_failed()
        if self.rank == 0 and self.run_id is not None:
            self._flush()
            outputs = str(self.out.resolve()) if self.status == "complete" else None
            record(self.cfg.cache, lambda m: catalog.end_run(m, self.run_id, self.status, output=outputs, metrics=self.final))
        return False

    @property
    def done(self) -> bool:
        """All steps trained, this invocation's share (`--stop-after`) is, or a signal asked to stop."""
        stop = self.cfg.stop_after is not None and self.job.step - self.start_step >= self.cfg.stop_after
        return self.job.step >= self.job.total or stop or bool(self.stopped)

    # ---- after every optimiser step -----------------------------------------------------------------
    def check_finite(self, total_loss) -> None:
        import torch

        if not torch.isfinite(total_loss):
            where = f"; last good checkpoint: {self.last_good}" if self.last_good else ""
            raise DimefmError(f"loss became {total_loss.item()} at step {self.job.step}: stopping{where}")

    def after_step(self, losses: dict, lr: float, epoch: int, images: int, failed=()) -> None:
        """Log (every `log_every` steps) and checkpoint (every `checkpoint_every` steps, and at the end).
        `failed`: (row, reason) of this rank's images that could not be read, recorded in `errors`."""
        step, cfg = self.job.step, self.cfg
        self.stopped = dist.max_over_ranks(stop_requested())  # every rank stops after the same step
        self.images += images
        self.failed.extend(failed)
        self.failed_total += len(failed)
        if self.rank == 0 and (step % cfg.log_every == 0 or step == self.job.total or step == 1):
            self.final = {k: float(v.detach()) for k, v in losses.items()}
            row = {"step": step, "epoch": epoch, "lr": lr, "seconds": time.time() - self.t0, **self.final}
            self.rows.append(row)
            _append_csv(self.csv, row)
            if self.tb is not None:
                for name, value in {"lr": lr, **self.final}.items():
                    self.tb.add_scalar(name if name == "lr" else f"loss/{name}", value, step)
            rate = self.images / max(time.time() - self.t0, 1e-9)
            self.bar.update(self.task, completed=step, items=self.images, rate=rate, description=f"distill loss {self.final['total']:.4f}")
            if time.time() - self._flushed >= metrics_every():
                self._flush()
        if step % cfg.checkpoint_every == 0 or self.done:
            if self.rank == 0:
                job = self.job
                self.last_good = save_checkpoint(self.out, step, job.model, job.opt, job.scaler, cfg)
                self._flush()
            self._flush_failed()
            dist.barrier()

    def _flush(self) -> None:
        """Move logged rows into the manifest's long `metrics` table (opened briefly, then released)."""
        if self.run_id is None or not self.rows:
            return
        data = [(self.run_id, r["step"], name, value) for r in self.rows for name, value in r.items() if name != "step"]
        self.rows.clear()
        self._flushed = time.time()
        record(self.cfg.cache, lambda man: catalog.add_metrics(man, data))

    def _flush_failed(self) -> None:
        """Record images that stage two could not read (stage 'distill'); every rank writes its own."""
        if not self.failed:
            return
        ids = [int(self.job.idx.image_item_ids[row]) for row, _ in self.failed]
        data = [(reason, self.run_id, item) for (_, reason), item in zip(self.failed, ids)]
        self.failed = []
        record(self.cfg.cache, lambda man: catalog.add_distill_errors(man, data))


@contextlib.contextmanager
def out_lock(out: str, rank: int):
    """Rank 0 holds `OUT/.distill.lock` for the whole run: a second run on the same --out is refused
    (on every rank). A folder this made and left holding only the lock is removed again."""
    folder = Path(out)
    made, lock, error = not folder.exists(), None, None
    if rank == 0:
        try:
            lock = hold(folder / ".distill.lock", f"another dimefm distill is writing to --out {folder}: one run per "
                                                  "output folder at a time")
        except DimefmError as exc:
            error = str(exc)
    error = dist.broadcast_object(error)
    if error:
        raise DimefmError(error)
    try:
        yield
    finally:
        if lock is not None:
            lock.release()
            if made and [p.name for p in folder.iterdir()] == [".distill.lock"]:
                (folder / ".distill.lock").unlink()
                folder.rmdir()


def interrupted_message(cfg: DistillConfig, command: str, log: RunLog) -> str:
    """What an interrupted run prints: where it stopped and the command that resumes it."""
    words = shlex.split(command) if command else []
    if words[:2] == ["dimefm", "distill"]:
        resume = command if "--resume" in words else f"{command} --resume"
    else:
        resume = (f"dimefm distill --cache {shlex.quote(cfg.cache)} --out {shlex.quote(cfg.out)} --resume (with the "
                  f"options in {Path(cfg.out) / 'config.json'})")
    saved = f"; checkpoint {log.last_good} saved" if log.last_good else ""
    return (f"distill stopped by {signal.Signals(log.stopped).name} at step {log.job.step} of {log.job.total}{saved}. "
            f"Resume with: {resume}")


def _tensorboard(folder: str):
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        raise DimefmError("--tensorboard needs the tensorboard package: pip install tensorboard") from None
    return SummaryWriter(folder)


def _append_csv(path: Path, row: dict) -> None:
    new = not path.exists()
    with open(path, "a", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(row))
        if new:
            w.writeheader()
        w.writerow(row)


def _drop_csv_rows_after(path: Path, step: int) -> None:
    """Keep the metric rows up to `step`: a killed run logged steps its last checkpoint does not hold."""
    if not path.exists():
        return
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    kept = [r for r in rows if int(r["step"]) <= step]
    if len(kept) == len(rows):
        return
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", newline="") as f:
        if rows:
            w = csv.DictWriter(f, fieldnames=list(rows[0]))
            w.writeheader()
            w.writerows(kept)
    tmp.replace(path)


def plot_losses(csv_path: Path, png: Path) -> None:
    """Loss curves of every term against the step."""
    fig = loss_figure(csv_path)
    if fig is not None:
        import matplotlib.pyplot as plt

        fig.savefig(png, dpi=120)
        plt.close(fig)


def loss_figure(csv_path: Path):
    """The figure of `plot_losses` (None without logged rows)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    with open(csv_path) as f:
        rows = list(csv.DictReader(f))
    if not rows:
        return None
    steps = [int(r["step"]) for r in rows]
    fig, ax = plt.subplots(figsize=(7, 4))
    for name in rows[0]:
        if name in ("step", "epoch", "lr", "seconds"):
            continue
        ax.plot(steps, [float(r[name]) for r in rows], label=name, linewidth=2 if name == "total" else 1)
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.set_yscale("log")
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8, frameon=False)  # beside the curves, not on them
    ax.set_title("DIME-FM distillation losses")
    fig.tight_layout()
    return fig
