"""The options of `dimefm encode images|texts|teacher`, and what a finished encode reports."""

from __future__ import annotations

from dataclasses import dataclass, field, fields

from dimefm_pipeline.core.errors import DimefmError
from dimefm_pipeline.core.options import option
from dimefm_pipeline.formats.base import MAX_IMAGE_BYTES, MAX_IMAGE_PIXELS
from dimefm_pipeline.formats.guards import ITEM_TIMEOUT

DEFAULT_SHARD_SIZE = 65_536
IMAGE_ONLY = ("views", "view_augment", "view_seed", "max_image_bytes", "max_image_pixels")  # options of images alone
PRECISIONS = ("auto", "fp32", "fp16", "bf16")


@dataclass(frozen=True)
class EncodeConfig:
    """A run of `dimefm encode images|texts` (a recipe's [encode] section; fields are also CLI options)."""

    modality: str = option(cli=False)  # "image" or "text": the command
    sources: tuple[str, ...] = option(cli=False)  # the command's arguments
    cache: str = option(help="Manifest file (.duckdb); created if missing.")
    cache_dir: str | None = option(None, "Shard folder (default: beside the manifest, named after it).")
    teacher: str | None = option(None, "open_clip model name, model-config .json, or `world` (default: the manifest's "
                                       "teacher).")
    pretrained: str | None = option(None, "open_clip tag, checkpoint path, or `random` (tests and benchmarks only).")
    batch_size: int = option(256, "Items per teacher forward.", min=1)
    workers: int = option(4, "DataLoader worker processes for reading, decoding and transforms; at most one per CPU "
                               "core.", min=0)
    shard_size: int = option(DEFAULT_SHARD_SIZE, "Maximum rows per shard file (also the unit of resume).", min=1)
    precision: str = option("auto", "auto | fp32 | fp16 | bf16 (autocast; CUDA only).")  # auto: fp16 on CUDA, fp32 on CPU
    # column/field names of the sources: options of their own per modality (`cli.encode`)
    source_options: dict = option(factory=dict, cli=False)
    item_timeout: float = option(ITEM_TIMEOUT, "Seconds to read and decode one item before it is skipped and recorded.")
    max_image_bytes: int = option(MAX_IMAGE_BYTES, "Largest image file, tar member, Parquet cell or TSV field (bytes), "
                                                   "checked before it is read; a larger one is recorded as too large.",
                                  min=1)
    max_image_pixels: int = option(MAX_IMAGE_PIXELS, "Most pixels of an image, read from its header before decoding "
                                                     "(decoding costs up to about 7 bytes per pixel); a larger one is "
                                                     "recorded.", min=1)
    views: int = option(1, "Teacher embeddings cached per image: view 0 is the image as the teacher's preprocessing "
                           "sees it, views 1..K-1 seeded crops and flips whose parameters are recorded, so `dimefm "
                           "distill` trains on exactly those crops (--views cached).", min=1)
    view_augment: str = option("reference", "How views 1..K-1 are drawn: reference (crops of 8-100% of the area, flip) | "
                                            "light (50-100%, flip) | a JSON file {\"scale\": \\[a, b], \"ratio\": \\[a, b], "
                                            "\"flip\": p}.")
    view_seed: int = option(0, "Seed of the views' crops and flips.")
    embeddings_from: str | None = option(None, "A clip-retrieval `inference` output folder (img_emb/ or text_emb/ "
                                               "with metadata/) made with this teacher: each item's row is taken "
                                               "from it, matched by key (an image's path or WebDataset key, a "
                                               "sentence's text); items it has no row for are encoded. A random "
                                               "sample is encoded too and the import refused if any cosine is below "
                                               "0.99.")

    def __post_init__(self):
        if self.modality not in ("image", "text"):
            raise DimefmError(f"modality must be image or text, not {self.modality}")
        if self.batch_size < 1 or self.shard_size < 1 or self.workers < 0:
            raise DimefmError("--batch-size and --shard-size must be >= 1 and --workers >= 0")
        if self.precision not in PRECISIONS:
            raise DimefmError(f"--precision must be one of {', '.join(PRECISIONS)}, not {self.precision!r}")
        if self.item_timeout <= 0:
            raise DimefmError("--item-timeout must be positive")
        if self.max_image_bytes < 1 or self.max_image_pixels < 1:
            raise DimefmError("--max-image-bytes and --max-image-pixels must be at least 1")
        if self.views < 1 or (self.views > 1 and self.modality != "image"):
            raise DimefmError("--views must be at least 1, and only images have views")
        if not self.sources:
            raise DimefmError("give at least one source")

    @classmethod
    def from_dict(cls, modality: str, sources, cache: str, options: dict) -> "EncodeConfig":
        """The encode of one modality's sources from a recipe's [encode] section (the views options
        are the images'); unknown keys are an error, not ignored."""
        options = dict(options)
        if modality == "text":
            options = {k: v for k, v in options.items() if k not in IMAGE_ONLY}
        unknown = sorted(set(options) - {f.name for f in fields(cls)} - {"source_options"})
        if unknown:
            raise DimefmError(f"unknown encode option(s): {', '.join(unknown)}")
        return cls(modality, tuple(sources), cache, **options)


@dataclass(frozen=True)
class AddTeacherConfig:
    """A run of `dimefm encode teacher` (fields are its CLI options)."""

    cache: str = option(help="Manifest of the cache (.duckdb) whose items the new teacher encodes.")
    teacher: str = option(help="open_clip model name, model-config .json, or `world` / `world-hard`.")
    pretrained: str | None = option(None, "open_clip tag or checkpoint path.")
    name: str | None = option(None, "The teacher's name in the cache, used by distill --teachers (default: the "
                                    "weights file's stem, or ARCH-TAG).")
    batch_size: int = option(256, "Rows per teacher forward.", min=1)
    precision: str = option("auto", "auto | fp32 | fp16 | bf16 (autocast; CUDA only).")

    def __post_init__(self):
        if self.batch_size < 1:
            raise DimefmError("--batch-size must be >= 1")
        if self.precision not in PRECISIONS:
            raise DimefmError(f"--precision must be one of {', '.join(PRECISIONS)}, not {self.precision!r}")


@dataclass
class EncodeSummary:
    run_id: int
    units_done: int = 0
    units_skipped: int = 0
    items: int = 0
    imported: int = 0  # rows taken from --embeddings-from
    errors: int = 0
    duplicates: int = 0
    truncated: int = 0
    seconds: float = 0.0
    per_source: list = field(default_factory=list)  # (source id, uri) of the command's sources
    empty: list = field(default_factory=list)  # uris of the command's sources that hold no entry
    other_files: dict = field(default_factory=dict)  # extension -> files of image folders that are not images
    import_check: object = None  # encode.imports.ImportCheck of --embeddings-from
