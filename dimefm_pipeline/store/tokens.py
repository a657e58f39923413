"""Token ids of cached sentences for a student tokenizer, built once and memory-mapped.

Stage two of a student text tower needs token ids for random sentences every step; tokenising the
Parquet text column per row would be a per-row decode in the hot path. The ids are instead written
once per (text shard, tokenizer) as int32 `.npy` arrays beside the cache and read like embeddings.
A token file is named after the checksum of the text shard's Parquet file (its sentences), never
after the shard's name, so a cache re-created in the same folder cannot pair new sentences with
stale ids.
"""

from __future__ import annotations

import hashlib

import numpy as np

from dimefm_pipeline.formats.base import bounded_text
from dimefm_pipeline.store.files import npy_bytes, write_durable
from dimefm_pipeline.store.manifest import catalog, record
from dimefm_pipeline.store.tables import EmbeddingTable


def tokenizer_key(tokenizer) -> str:
    """Identity of a tokenizer: its class, context length and the ids it gives a probe sentence."""
    probe = tokenizer(["the quick brown fox jumps over the lazy dog 0123"]).numpy().tobytes()
    h = hashlib.sha256(type(tokenizer).__name__.encode() + str(getattr(tokenizer, "context_length", "")).encode() + probe)
    return h.hexdigest()[:16]


def shard_texts(parquet) -> list[str]:
    """A text shard's sentences as stage one gave them to the teacher's tokenizer (cut where it cut them)."""
    import pyarrow.parquet as pq

    return [bounded_text(t)[0] for t in pq.read_table(parquet, columns=["text"]).column("text").to_pylist()]


def build_token_shards(idx, tokenizer, chunk: int = 8192) -> EmbeddingTable:
    """Token shards for every text shard of the cache `idx` (built on first use, reused after)."""
    folder = idx.cache_dir / "tokens" / tokenizer_key(tokenizer)
    folder.mkdir(parents=True, exist_ok=True)
    paths, built = [], []
    for (npy, parquet, rows, *_), checksum in zip(idx.text_shards, idx.text_checksums):
        path = folder / f"{checksum[:32]}.npy"
        if not path.exists():
            # the text as stage one gave it to the teacher's tokenizer (cut where it was cut)
            texts = shard_texts(parquet)
            ids = np.concatenate([tokenizer(texts[i : i + chunk]).numpy().astype(np.int32) for i in range(0, len(texts), chunk)])
            data = npy_bytes(ids)
            write_durable(path, data)
            built.append((folder.name, checksum, str(path.relative_to(folder.parent.parent)), len(ids),
                          hashlib.sha256(data).hexdigest()))
        paths.append(path)
    if built:  # recorded so that `dimefm info --verify` checks them like every other cache file
        record(str(idx.path), lambda man: catalog.add_token_files(man, built))
    return EmbeddingTable(paths, [f[2] for f in idx.text_shards], dtype=np.int32)
