"""Every option of a distillation run, as one frozen dataclass (recipes and CLI fill it)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields

from dimefm_pipeline.core.errors import DimefmError
from dimefm_pipeline.core.loss_config import LossConfig


@dataclass(frozen=True)
class DistillConfig:
    cache: str  # manifest of the stage-one cache
    out: str  # output folder: model config + weights, checkpoints, metrics
    student: str | None = None  # open_clip name or model-config JSON; None: the world student for the world teacher
    init: str | None = None  # checkpoint to start the student from (random init otherwise)
    name: str | None = None  # architecture name of the output config (default: dimefm-<student>)
    text_tower: str = "student"  # "student": distil both towers; "teacher": keep the teacher's text tower (reference)
    # data
    batch_size: int = 640  # images per rank per step (the reference: 640 per GPU)
    text_batch_size: int | None = None  # sentences per rank per step (default: = batch_size)
    workers: int = 4  # DataLoader workers for image decoding and augmentation
    augment: str | None = None  # on-the-fly augmentation: reference | light | none (default: reference, or none with cached views)
    views: str = "auto"  # cached: train on the cache's augmented views (crop replayed exactly) | first: view 0 only | auto
    text_filter: str = "all"  # all | mined: train only on sentences that are some image's mined neighbour
    mined_share: float = 0.0  # share of each batch's sentences drawn from the batch images' mined neighbours
    mining_id: int | None = None  # which mining to use (default: the latest)
    # schedule (reference: 100 epochs, 4 warm-up epochs, lr 8e-4 -> 4e-5, warm-up from 4e-6)
    epochs: float = 100.0
    steps: int | None = None  # if set, overrides epochs
    warmup: float = 0.04  # linear warm-up: a share of all steps below 1 (4 of 100 epochs), else a number of steps
    lr: float = 8e-4
    min_lr: float = 4e-5
    warmup_lr: float = 4e-6
    weight_decay: float = 0.05
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-8
    grad_clip: float | None = None  # max gradient norm; None: no clipping, as the reference
    precision: str = "amp"  # amp (fp16 autocast + grad scaler on CUDA; fp32 on CPU) | bf16 (CUDA or CPU) | fp32
    # losses
    loss: LossConfig = field(default_factory=LossConfig)
    pvl_mined_k: int = 1  # mined neighbours averaged into the pseudo caption of the mined P-VL term
    # bookkeeping
    checkpoint_every: int = 1000  # steps between checkpoints (one is always written at the end)
    log_every: int = 10
    seed: int = 0
    resume: bool = False
    allow_schedule_change: bool = False  # resume with another schedule than the checkpoint's
    stop_after: int | None = None  # end this invocation after N steps with a checkpoint (time-boxed jobs)
    tensorboard: str | None = None  # folder for TensorBoard scalars (loss terms, lr), beside the CSV and manifest
    verify_cache: str = "sample"  # before training: sample (1 MiB per cache file) | full (every byte) | off
    item_timeout: float = 60.0  # seconds to read and decode one image before it is skipped as timed out

    def __post_init__(self):
        if self.text_tower not in ("student", "teacher"):
            raise DimefmError(f"--text-tower must be student or teacher, not {self.text_tower!r}")
        if self.augment not in (None, "reference", "light", "none"):
            raise DimefmError(f"--augment must be reference, light or none, not {self.augment!r}")
        if self.views not in ("auto", "cached", "first"):
            raise DimefmError(f"--views must be auto, cached or first, not {self.views!r}")
        if self.text_filter not in ("all", "mined"):
            raise DimefmError(f"--text-filter must be all or mined, not {self.text_filter!r}")
        if not 0.0 <= self.mined_share <= 1.0:
            raise DimefmError("--mined-share must be between 0 and 1")
        if self.batch_size < 2 or (self.text_batch_size is not None and self.text_batch_size < 2):
            raise DimefmError("batch sizes must be at least 2 (similarity rows need several columns)")
        if self.precision not in ("amp", "bf16", "fp32"):
            raise DimefmError(f"--precision must be amp, bf16 or fp32, not {self.precision!r}")
        if self.steps is not None and self.steps < 1:
            raise DimefmError(f"--steps must be at least 1, not {self.steps}")
        if not self.epochs > 0:
            raise DimefmError(f"--epochs must be positive, not {self.epochs}")
        if min(self.lr, self.min_lr, self.warmup_lr, self.weight_decay) < 0:
            raise DimefmError("learning rates and weight decay cannot be negative")
        if self.warmup < 0:
            raise DimefmError(f"--warmup cannot be negative, not {self.warmup}")
        if self.grad_clip is not None and self.grad_clip <= 0:
            raise DimefmError(f"--grad-clip-norm must be positive, not {self.grad_clip}")
        if self.workers < 0 or self.checkpoint_every < 1 or self.log_every < 1:
            raise DimefmError("--workers must be >= 0, --checkpoint-every and --log-every >= 1")
        if self.stop_after is not None and self.stop_after < 1:
            raise DimefmError(f"--stop-after must be at least 1, not {self.stop_after}")
        if self.item_timeout <= 0:
            raise DimefmError("--item-timeout must be positive")
        if isinstance(self.verify_cache, bool):  # older recipes: true = every byte, false = off
            object.__setattr__(self, "verify_cache", "full" if self.verify_cache else "off")
        if self.verify_cache not in ("sample", "full", "off"):
            raise DimefmError(f"--verify-cache must be sample, full or off, not {self.verify_cache!r}")

    def warmup_steps(self, total: int) -> int:
        """Steps of linear warm-up in a run of `total` steps."""
        if self.warmup >= 1:
            return min(int(round(self.warmup)), total)
        return max(1, round(self.warmup * total)) if self.warmup > 0 else 0

    # options that shape the schedule or the data order: a resumed run must keep them
    SCHEDULE = ("steps", "epochs", "lr", "min_lr", "warmup", "warmup_lr", "weight_decay", "betas", "eps", "batch_size",
                "text_batch_size", "seed", "grad_clip")

    @property
    def texts_per_step(self) -> int:
        return self.text_batch_size or self.batch_size

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "DistillConfig":
        """Build from a flat or nested dict (recipes); unknown keys are an error, not ignored."""
        d = dict(d)
        loss = d.pop("loss", {}) or {}
        loss_names = {f.name for f in fields(LossConfig)}
        for k in list(d):
            if k in loss_names:
                loss[k] = d.pop(k)
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known) + sorted(set(loss) - loss_names)
        if unknown:
            raise DimefmError(f"unknown distill option(s): {', '.join(unknown)}")
        if "betas" in d:
            d["betas"] = tuple(d["betas"])
        return cls(loss=LossConfig(**loss), **d)
