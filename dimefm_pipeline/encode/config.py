"""The options of `dimefm encode images|texts`, and what a finished encode reports."""

from __future__ import annotations

from dataclasses import dataclass, field

from dimefm_pipeline.core.errors import DimefmError
from dimefm_pipeline.formats.guards import ITEM_TIMEOUT

DEFAULT_SHARD_SIZE = 65_536
PRECISIONS = ("auto", "fp32", "fp16", "bf16")


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
