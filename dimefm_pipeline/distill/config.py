"""Every option of a distillation run, as one frozen dataclass (recipes and CLI fill it)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields

from dimefm_pipeline.core.errors import DimefmError
from dimefm_pipeline.core.options import option
from dimefm_pipeline.core.loss_config import COMBINES, LossConfig


@dataclass(frozen=True)
class DistillConfig:
    """A run of `dimefm distill` (a recipe's [distill] section; each field is also a CLI option)."""

    cache: str = option(help="Manifest file (.duckdb) of the stage-one cache.")
    out: str = option(help="Output folder: an open_clip hub model (open_clip_config.json, open_clip_model.safetensors), "
                           "checkpoints, metrics.")
    student: str | None = option(None, "open_clip name or model-config .json (default for the world teacher: "
                                       "dimefm-world-student).")
    init: str | None = option(None, "Start the student from these weights.")
    name: str | None = option(None, "Architecture name of the output config (default: dimefm-STUDENT).")
    text_tower: str = option("student", "student: distil both towers; teacher: keep the teacher's text tower.")
    # data
    batch_size: int = option(640, "Images per rank per step.")  # the reference: 640 per GPU
    text_batch_size: int | None = option(None, "Sentences per rank per step (default: --batch-size).")
    micro_batch: int | None = option(None, "Images (and sentences) per forward pass: the loss still spans the whole "
                                           "batch and the update is the full batch's (exact without BatchNorm, "
                                           "docs/losses.md) in the memory of a micro-batch, for a second forward pass "
                                           "(default: the whole batch).")
    workers: int = option(4, "DataLoader workers (read, decode, augment); at most one per CPU core.")
    augment: str | None = option(None, "reference | light | none: augmentation drawn afresh on the fly every epoch (the "
                                       "reference's behaviour); the teacher target stays the un-augmented image's "
                                       "(default: reference, or none with cached views).")
    views: str = option("auto", "cached: each epoch, each image trains on one of the views stage one cached (encode "
                                "--views K), its crop and flip replayed exactly, so input and target show the same "
                                "pixels | first: view 0 only (then --augment applies) | auto: cached when the cache has "
                                "views.")
    text_filter: str = option("all", "all | mined: train only on sentences that are some image's mined neighbour "
                                     "(needs `dimefm mine`).")
    mined_share: float = option(0.0, "Share of each batch's sentences drawn from the batch images' mined neighbours.")
    mining_id: int | None = option(None, "Which mining to use (default: the latest).")
    # schedule (reference: 100 epochs, 4 warm-up epochs, lr 8e-4 -> 4e-5, warm-up from 4e-6)
    epochs: float = option(100.0, "Epochs over the cached images.")
    steps: int | None = option(None, "Total steps (overrides --epochs).")
    warmup: float = option(0.04, "Linear warm-up: a share of all steps if below 1, else a number of steps.")
    lr: float = option(8e-4, "Peak learning rate.")
    min_lr: float = option(4e-5, "Learning rate at the end of the cosine decay.", flag="--lr-min")
    warmup_lr: float = option(4e-6, "Learning rate the warm-up starts from.")
    weight_decay: float = option(0.05, "AdamW weight decay (not on 1-D parameters, biases, embeddings).", flag="--wd")
    betas: tuple[float, float] = option((0.9, 0.999), ("AdamW beta1.", "AdamW beta2."), flag=("--beta1", "--beta2"))
    eps: float = option(1e-8, "AdamW epsilon.")
    grad_clip: float | None = option(None, "Clip the gradient norm to this (default: no clipping, as the reference).",
                                     flag="--grad-clip-norm")
    precision: str = option("amp", "amp: fp16 autocast + grad scaler on CUDA, fp32 on CPU; bf16: bf16 autocast on CUDA "
                                   "and on CPU; fp32.")
    # teachers
    teachers: str | None = option(None, "Distil from these teachers of the cache, comma-separated names (dimefm info "
                                        "lists them; dimefm encode teacher adds one); the student takes the first "
                                        "one's dim (default: the cache's own teacher).")
    teacher_weights: str | None = option(None, "Weight of each of --teachers, comma-separated (normalised to sum "
                                               "1; default: equal).")
    teacher_scales: str | None = option(None, "Logit scale of each of --teachers' similarities, comma-separated "
                                              "(default: --logit-scale for every teacher).")
    ensemble: str = option("mean", "How --teachers' targets combine: mean (weighted mean of each teacher's KL terms) | "
                                   "mixture (KL to the weighted mixture of their distributions, where the student side "
                                   "is the student's alone), docs/losses.md.")
    # losses
    loss: LossConfig = option(factory=LossConfig, cli=False)  # its fields are options of their own
    pvl_mined_k: int = option(1, "Mined neighbours averaged into the pseudo caption of the mined P-VL term.")
    # bookkeeping
    checkpoint_every: int = option(1000, "Steps between checkpoints (one is always written at the end).")
    log_every: int = option(10, "Steps between metric rows (CSV, manifest, progress).")
    seed: int = option(0, "Seed of the data order, augmentation and the student's initialisation.")
    resume: bool = option(False, "Continue from the latest checkpoint in --out (same schedule). A finished run is left "
                                 "as it is: nothing trained or written, exit code 0.")
    allow_schedule_change: bool = option(False, "With --resume: accept a schedule (steps, epochs, lr, warm-up, batch "
                                                "sizes, seed) other than the checkpoint's.")
    stop_after: int | None = option(None, "End this invocation after N steps with a checkpoint (time-boxed jobs).")
    tensorboard: str | None = option(None, "Also write the loss terms and learning rate as TensorBoard scalars to this "
                                           "folder.")
    verify_cache: str = option("sample", "Before training, check every cache file: sample (16 blocks of 64 KiB each: "
                                         "2.8 s per 100 GB measured) | full (every byte's sha256: 126 s per 100 GB) | off.")
    item_timeout: float = option(60.0, "Seconds to read and decode one image before it is skipped and recorded.")

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
        if self.micro_batch is not None and self.micro_batch < 1:
            raise DimefmError(f"--micro-batch must be at least 1, not {self.micro_batch}")
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
        if isinstance(self.verify_cache, bool):  # a recipe's true/false: every byte / off
            object.__setattr__(self, "verify_cache", "full" if self.verify_cache else "off")
        self._check_teachers()
        if self.verify_cache not in ("sample", "full", "off"):
            raise DimefmError(f"--verify-cache must be sample, full or off, not {self.verify_cache!r}")

    def _check_teachers(self) -> None:
        names = self.teacher_names
        if names and (len(set(names)) != len(names) or not all(names)):
            raise DimefmError(f"--teachers must name each teacher once, not {self.teachers!r}")
        for flag, value in (("--teacher-weights", self.teacher_weights), ("--teacher-scales", self.teacher_scales)):
            if value is None:
                continue
            if not names:
                raise DimefmError(f"{flag} needs --teachers")
            try:
                numbers = [float(v) for v in _listed(value)]
            except ValueError:
                raise DimefmError(f"{flag} must be comma-separated numbers, not {value!r}") from None
            if len(numbers) != len(names) or min(numbers) < 0 or (flag == "--teacher-scales" and min(numbers) == 0):
                raise DimefmError(f"{flag} needs one {'positive' if 'scales' in flag else 'non-negative'} number for "
                                  f"each of the {len(names)} teachers, not {value!r}")
        if names and not sum(self.teacher_weight_list):
            raise DimefmError("--teacher-weights: at least one teacher needs a weight above 0")
        if self.ensemble not in COMBINES:
            raise DimefmError(f"--ensemble must be one of {', '.join(COMBINES)}, not {self.ensemble!r}")

    @property
    def teacher_names(self) -> tuple[str, ...]:
        return tuple(_listed(self.teachers)) if self.teachers else ()

    @property
    def teacher_weight_list(self) -> list[float]:
        """Each teacher's weight, normalised to sum 1."""
        w = [float(v) for v in _listed(self.teacher_weights)] if self.teacher_weights else [1.0] * len(self.teacher_names)
        return [v / sum(w) for v in w] if sum(w) else w

    @property
    def teacher_scale_list(self) -> list[float | None]:
        return [float(v) for v in _listed(self.teacher_scales)] if self.teacher_scales else [None] * len(self.teacher_names)

    def warmup_steps(self, total: int) -> int:
        """Steps of linear warm-up in a run of `total` steps."""
        if self.warmup >= 1:
            return min(int(round(self.warmup)), total)
        return max(1, round(self.warmup * total)) if self.warmup > 0 else 0

    # options that shape the schedule or the data order: a resumed run must keep them
    SCHEDULE = ("teachers", "teacher_weights", "teacher_scales", "ensemble", "steps", "epochs", "lr", "min_lr", "warmup", "warmup_lr", "weight_decay", "betas", "eps", "batch_size",
                "text_batch_size", "seed", "grad_clip")

    @property
    def texts_per_step(self) -> int:
        return self.text_batch_size or self.batch_size

    @property
    def micro_batched(self) -> bool:
        """Whether a step's forward passes run in micro-batches (smaller than a tower's batch)."""
        largest = self.batch_size if self.text_tower == "teacher" else max(self.batch_size, self.texts_per_step)
        return self.micro_batch is not None and self.micro_batch < largest

    def to_dict(self) -> dict:
        return asdict(self)

    def as_run(self, total: int, per_epoch: int) -> dict:
        """The options as the run uses them (its `config.json` and its row in `runs`): the steps it
        trains and the epochs they make, whichever of --steps and --epochs was given."""
        return {**self.to_dict(), "steps": total, "epochs": round(total / per_epoch, 4), "steps_per_epoch": per_epoch}

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


def _listed(value) -> list[str]:
    """A comma-separated option (or a recipe's list) as its stripped parts."""
    parts = value if isinstance(value, (list, tuple)) else str(value).split(",")
    return [str(p).strip() for p in parts]
