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

from dimefm_pipeline.store.files import npy_bytes, write_durable
from dimefm_pipeline.store.tables import EmbeddingTable


def tokenizer_key(tokenizer) -> str:
    """Identity of a tokenizer: its class, context length and the ids it gives a probe sentence."""
    probe = tokenizer(["the quick brown fox jumps over the lazy dog 0123"]).numpy().tobytes()
    h = hashlib.sha256(type(tokenizer).__name__.encode() + str(getattr(tokenizer, "context_length", "")).encode() + probe)
    return h.hexdigest()[:16]


def build_token_shards(idx, tokenizer, chunk: int = 8192) -> EmbeddingTable:
    """Token shards for every text shard of the cache (built on first use, reused after)."""
    import pyarrow.parquet as pq

    from dimefm_pipeline.store.manifest import Manifest, lock_wait

    with Manifest(idx.path, read_only=True, wait=lock_wait()) as man:  # another run's short write: wait
        files = man.shard_files("text")
        sums = [r[0] for r in man.query("SELECT parquet_checksum FROM shards WHERE modality = 'text' AND state = 'complete' "
                                        "ORDER BY shard_id").fetchall()]
        folder = man.cache_dir / "tokens" / tokenizer_key(tokenizer)
    folder.mkdir(parents=True, exist_ok=True)
    paths, built = [], []
    for (npy, parquet, rows, *_), checksum in zip(files, sums):
        path = folder / f"{checksum[:32]}.npy"
        if not path.exists():
            texts = pq.read_table(parquet, columns=["text"]).column("text").to_pylist()
            ids = np.concatenate([tokenizer(texts[i : i + chunk]).numpy().astype(np.int32) for i in range(0, len(texts), chunk)])
            data = npy_bytes(ids)
            write_durable(path, data)
            built.append((folder.name, checksum, str(path.relative_to(folder.parent.parent)), len(ids),
                          hashlib.sha256(data).hexdigest()))
        paths.append(path)
    if built:  # recorded so that `dimefm info --verify` checks them like every other cache file
        from dimefm_pipeline.distill.runlog import record
        from dimefm_pipeline.store.manifest import now

        record(str(idx.path), lambda man: man.con.executemany("INSERT INTO token_files VALUES (?, ?, ?, ?, ?, ?)",
                                                               [(*b, now()) for b in built]))
    return EmbeddingTable(paths, [f[2] for f in files], dtype=np.int32)
