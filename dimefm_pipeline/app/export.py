"""What dimefm writes for other tools: a shipped teacher as an open_clip hub folder (the folder a
distilled student gets: `open_clip.create_model_and_transforms("local-dir:OUT")`, and so CLIP_benchmark's
`--model_type open_clip --model local-dir:OUT`, loads it without dimefm, with the weights, tokenizer and
preprocessing `dimefm eval --model NAME` uses), and a cache's teacher rows in clip-retrieval's
`inference` layout (what its index and retrieval steps read, and `encode --embeddings-from` reads back).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from dimefm_pipeline.core import models
from dimefm_pipeline.core.errors import DimefmError


def export_teacher(name: str, out: str | Path) -> tuple[Path, Path]:
    """Write the shipped teacher `name` (a key of `models.SHIPPED_TEACHERS`) to the folder `out`
    (absent or empty): `open_clip_config.json` and `open_clip_model.safetensors`, both 0644."""
    import open_clip

    from dimefm_pipeline.distill.student import Student, save_student

    if name not in models.SHIPPED_TEACHERS:
        known = ", ".join(sorted(models.SHIPPED_TEACHERS))
        raise DimefmError(f"unknown shipped teacher {name!r}: choose one of {known}")
    out = Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise DimefmError(f"--out {out} already exists and is not an empty folder: name a new folder or remove it")
    loaded = models.build(models.resolve_spec(name, None), quiet=True)
    pp = loaded.preprocess_cfg
    teacher = Student(model=loaded.model, arch=loaded.spec.arch, config=loaded.spec.config, tokenizer=None,
                      image_size=loaded.image_size, mean=tuple(pp.get("mean", open_clip.OPENAI_DATASET_MEAN)),
                      std=tuple(pp.get("std", open_clip.OPENAI_DATASET_STD)))
    about = {"teacher": name, "fingerprint": loaded.fingerprint}
    return save_student(teacher, out, logit_scale=None, about=about)


def export_clip_retrieval(cache: str, out: str | Path, modalities=("image", "text"), *,
                          rows_per_partition: int = 1_000_000) -> dict:
    """Write a cache's teacher rows in the layout clip-retrieval's `inference` writes
    (`formats/clip_retrieval.py`): `img_emb/img_emb_N.npy` and `text_emb/text_emb_N.npy` (float16, unit
    rows) with `metadata/metadata_N.parquet` (`image_path`: the item's key; `caption`: the sentence;
    and `source`, `file`, `pos`, which name the cached item). Images give their view 0 (the
    un-augmented image). Images and sentences are written as separate partitions, numbered on from
    each other. Returns the rows written per modality."""
    import pyarrow.parquet as pq

    from dimefm_pipeline.formats.clip_retrieval import partition_width
    from dimefm_pipeline.store.manifest import catalog
    from dimefm_pipeline.store.manifest.inspect import open_for_reading

    out = Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise DimefmError(f"--out {out} already exists and is not an empty folder: name a new folder or remove it")
    with open_for_reading(cache) as man:
        shards = {m: catalog.shard_files(man, m) for m in modalities}
    tables = {m: [(f[0], _export_columns(pq, f[1], m)) for f in files] for m, files in shards.items()}
    rows = {m: sum(int(keep.sum()) for _, (keep, _) in parts) for m, parts in tables.items()}
    if not any(rows.values()):
        raise DimefmError(f"{cache} holds no {' or '.join(modalities)} embeddings to export")
    width = partition_width(sum(-(-n // rows_per_partition) for n in rows.values()))
    part = 0
    for m, parts in tables.items():
        buffer = _Buffer()
        for npy, (keep, cols) in parts:
            buffer.add(np.load(npy, mmap_mode="r")[keep], {k: [v for v, w in zip(c, keep) if w] for k, c in cols.items()})
            while buffer.rows >= rows_per_partition:
                part = buffer.flush(out, m, part, width, rows_per_partition)
        if buffer.rows:
            part = buffer.flush(out, m, part, width, buffer.rows)
    return rows


def _export_columns(pq, parquet, modality: str):
    """(rows kept: an image's view 0, every sentence; the metadata columns) of one shard."""
    t = pq.read_table(parquet, columns=["key", "source_id", "file", "pos", "view" if modality == "image" else "text"])
    d = t.to_pydict()
    keep = np.asarray(d["view"]) == 0 if modality == "image" else np.ones(t.num_rows, bool)
    return keep, {"key": d["key"] if modality == "image" else d["text"], "source": d["source_id"], "file": d["file"],
                  "pos": d["pos"]}


class _Buffer:
    """Rows waiting to be written as a partition."""

    def __init__(self):
        self.emb, self.cols, self.rows = [], {}, 0

    def add(self, emb, cols: dict) -> None:
        self.emb.append(np.asarray(emb))
        for k, v in cols.items():
            self.cols.setdefault(k, []).extend(v)
        self.rows += len(emb)

    def flush(self, out, modality: str, part: int, width: int, n: int) -> int:
        """Write the first `n` rows as partition `part`; returns the next partition number."""
        from dimefm_pipeline.formats.clip_retrieval import write_partition

        emb = np.concatenate(self.emb)
        keys = self.cols.pop("key")
        write_partition(out, modality, part, width, emb[:n], keys[:n], {k: v[:n] for k, v in self.cols.items()})
        self.emb, self.rows = [emb[n:]], len(emb) - n
        self.cols = {"key": keys[n:], **{k: v[n:] for k, v in self.cols.items()}}
        return part + 1
