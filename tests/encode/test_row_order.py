"""Stage one's rows, checked within stage one: every embedding row is the teacher's embedding of the
bytes its own locator points at (images) or of its own text (sentences), in every shard, when loader
workers deliver a unit's read blocks out of order and shards do not divide the units evenly."""

from __future__ import annotations

import io

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch
from PIL import Image

from dimefm_pipeline.core import models
from dimefm_pipeline.store.reader import ImageReader
from dimefm_pipeline.encode.config import EncodeConfig
from dimefm_pipeline.encode.run import encode
from dimefm_pipeline.formats.images import decode_image
from dimefm_pipeline.store.cache import load_cache
from tests.conftest import plain_duckdb


def _png(seed: int) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(seed).integers(0, 255, (32, 32, 3), dtype=np.uint8)).save(buf, "PNG")
    return buf.getvalue()


def test_every_row_is_the_teacher_on_its_own_bytes_and_text(teacher, tmp_path):
    # row groups of 5 read in batches of 2 by 2 workers: the batches of a unit arrive out of order
    pq.write_table(pa.table({"key": [f"r{i}" for i in range(23)], "image": [_png(i) for i in range(23)]}),
                   tmp_path / "p.parquet", row_group_size=5)
    (tmp_path / "s.txt").write_text("".join(f"sentence {i} about thing {i * 7 % 11}\n" for i in range(23)))
    cache = tmp_path / "m.duckdb"
    common = dict(teacher=str(teacher[0]), pretrained=str(teacher[1]), workers=2, batch_size=2, shard_size=9)
    encode(EncodeConfig("image", (str(tmp_path / "p.parquet"),), str(cache), **common), progress=False)
    encode(EncodeConfig("text", (str(tmp_path / "s.txt"),), str(cache), **common), progress=False)
    loaded = models.build(models.resolve_spec(str(teacher[0]), str(teacher[1])), quiet=True)
    idx = load_cache(cache, verify=False, sources=True)
    reader = ImageReader(idx)
    with torch.no_grad():
        pixels = torch.stack([loaded.preprocess(decode_image(reader.read(r))) for r in range(len(idx.images))])
        want = torch.nn.functional.normalize(loaded.model.encode_image(pixels).float(), dim=-1).numpy()
    got = idx.images.take(np.arange(len(idx.images))).astype(np.float32)
    cos = (got * want).sum(1)
    assert cos.min() > 0.999, f"image row {int(cos.argmin())} is not its own locator's image (cosine {cos.min():.3f})"
    con = plain_duckdb(cache)
    texts = [r[0] for r in con.execute("SELECT i.key FROM items i JOIN shards s ON i.shard = s.shard_id "
                                       "WHERE i.modality = 'text' ORDER BY s.shard_id, i.row").fetchall()]
    keys = [r[0] for r in con.execute("SELECT key FROM image_embeddings ORDER BY pos").fetchall()]
    con.close()
    assert keys == [f"r{i}" for i in range(23)] and sorted(texts, key=int) == [str(i + 1) for i in range(23)]
    sentences = [t for shard in idx.text_shards for t in pq.read_table(shard[1], columns=["text"]).column("text").to_pylist()]
    assert sorted(sentences) == sorted(f"sentence {i} about thing {i * 7 % 11}" for i in range(23))
    with torch.no_grad():
        want = torch.nn.functional.normalize(loaded.model.encode_text(loaded.tokenizer(sentences)).float(), dim=-1).numpy()
    got = idx.texts.take(np.arange(len(idx.texts))).astype(np.float32)
    cos = (got * want).sum(1)
    assert cos.min() > 0.999, f"text row {int(cos.argmin())} is not its own sentence (cosine {cos.min():.3f})"
