"""The options of `dimefm mine` (a recipe's [mine] section; each field is also a CLI option)."""

from __future__ import annotations

from dataclasses import dataclass, fields

from dimefm_pipeline.core.errors import DimefmError
from dimefm_pipeline.core.options import option

IMAGE_BLOCK = 65_536  # images per block: the grain of work, resume and distribution
ENGINES = ("exact", "ivf")


@dataclass(frozen=True)
class MineConfig:
    cache: str = option(help="Manifest file (.duckdb) with image and text embeddings.")
    k: int = option(8, "Sentences kept per image.", min=1)
    engine: str = option("exact", "exact: every sentence, no index, memory bounded by the blocks (float32 matmul on CPU, "
                                  "fp16 matmul + fp32 re-scoring on GPU) | ivf: a faiss IVF index (approximate).")
    nprobe: int | None = option(None, "--engine ivf: lists searched per query.")
    use_gpu: bool | None = option(None, "Where to search (default: the GPU when there is one).", flag="--gpu/--cpu")
    image_block: int = option(IMAGE_BLOCK, "Images per block: the grain of work, resume and ranks.", min=1)
    text_block: int | None = option(None, "Sentences per block of the exact search (default: 262,144 on CPU).", min=1)

    def __post_init__(self):
        if self.engine not in ENGINES:
            raise DimefmError(f"--engine must be one of {', '.join(ENGINES)}, not {self.engine!r}")
        if self.k < 1 or self.image_block < 1 or (self.text_block is not None and self.text_block < 1):
            raise DimefmError("--k, --image-block and --text-block must be at least 1")

    @classmethod
    def from_dict(cls, d: dict) -> "MineConfig":
        """Build from a recipe section; unknown keys are an error, not ignored."""
        unknown = sorted(set(d) - {f.name for f in fields(cls)})
        if unknown:
            raise DimefmError(f"unknown mine option(s): {', '.join(unknown)}")
        return cls(**d)
