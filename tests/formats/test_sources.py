"""Every source format, and every kind of bad input: encoded correctly or recorded and skipped."""

from __future__ import annotations

import base64
import io
import json
import os
import tarfile

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image


from tests.conftest import encode_sources, query
from dimefm_pipeline.core.errors import DimefmError
from dimefm_pipeline.formats.files import expand_braces
from dimefm_pipeline.formats.files import BadItem
from dimefm_pipeline.formats.images import decode_image


def _png(seed=0, size=(20, 20), mode="RGB") -> bytes:
    arr = np.random.default_rng(seed).integers(0, 255, (*size, 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(arr).convert(mode).save(buf, format="PNG" if mode != "CMYK" else "JPEG")
    return buf.getvalue()


def test_brace_expansion_keeps_zero_padding():
    assert expand_braces("/d/{000..002}.tar") == ["/d/000.tar", "/d/001.tar", "/d/002.tar"]
    assert expand_braces("{a,b}-{1..2}") == ["a-1", "a-2", "b-1", "b-2"]


def test_bad_images_are_recorded_and_skipped_and_odd_modes_are_encoded(teacher, tmp_path):
    d = tmp_path / "imgs"
    d.mkdir()
    good = _png(1)
    (d / "good.png").write_bytes(good)
    (d / "zero.png").write_bytes(b"")
    (d / "truncated.png").write_bytes(good[: len(good) // 2])
    (d / "text.jpg").write_bytes(b"hello, I am not an image")
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).convert("CMYK").save(d / "cmyk.jpg")
    Image.fromarray((np.arange(64, dtype=np.uint16).reshape(8, 8) * 1000)).save(d / "sixteen.png")
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).convert("P").save(d / "palette.png")
    frames = [Image.new("RGB", (8, 8), c) for c in ("red", "blue")]
    frames[0].save(d / "anim.gif", save_all=True, append_images=frames[1:])
    Image.new("RGBA", (8, 8), (255, 0, 0, 0)).save(d / "alpha.png")
    Image.new("L", (20000, 20000)).save(d / "bomb.png", optimize=True)  # 400 MP > the 32 MP limit
    os.symlink(d / "missing-target.png", d / "dangling.png")
    cache = tmp_path / "m.duckdb"
    summary = encode_sources(teacher, "image", [d], cache)
    ok = {r[0] for r in query(cache, "SELECT key FROM items")}
    assert ok == {"good.png", "cmyk.jpg", "sixteen.png", "palette.png", "anim.gif", "alpha.png"}
    errors = dict(query(cache, "SELECT key, reason FROM errors"))
    assert set(errors) == {"zero.png", "truncated.png", "text.jpg", "bomb.png", "dangling.png"}
    assert errors["zero.png"] == "zero-byte file"
    assert "truncated" in errors["truncated.png"] and errors["text.jpg"] == "not an image"
    assert errors["bomb.png"].startswith("too many pixels: 20000 x 20000") and errors["dangling.png"].startswith("unreadable file")
    assert summary.errors == 5 and summary.items == 6


def test_sixteen_bit_images_are_scaled_not_clipped():
    buf = io.BytesIO()
    Image.fromarray((np.arange(256, dtype=np.uint16).reshape(16, 16) * 256)).save(buf, format="PNG")
    rgb = np.asarray(decode_image(buf.getvalue()))
    assert rgb.min() == 0 and rgb.max() == 255 and len(np.unique(rgb)) > 200
    with pytest.raises(BadItem, match="invalid base64"):
        decode_image(("b64", "***"))


def test_webdataset_parquet_and_tsv_image_sources(teacher, tmp_path):
    tars = []
    for t in range(2):
        path = tmp_path / f"shard-{t:03d}.tar"
        with tarfile.open(path, "w") as tf:
            for i in range(3):
                for name, data in ((f"s{i}.jpg", _png(t * 10 + i)), (f"s{i}.json", b"{}")):
                    info = tarfile.TarInfo(name)
                    info.size = len(data)
                    tf.addfile(info, io.BytesIO(data))
            info = tarfile.TarInfo("orphan.txt")
            info.size = 2
            tf.addfile(info, io.BytesIO(b"hi"))
        tars.append(path)
    (tmp_path / "p.png").write_bytes(_png(7))
    pq.write_table(pa.table({"key": ["a", "b"], "image": [_png(5), _png(6)]}), tmp_path / "bytes.parquet")
    pq.write_table(pa.table({"id": ["x"], "path": ["p.png"]}), tmp_path / "paths.parquet")
    lines = [f"k{i}\t{base64.b64encode(_png(20 + i)).decode()}" for i in range(3)] + ["bad\tnot*base64"]
    (tmp_path / "imgs.tsv").write_text("\n".join(lines) + "\n")
    cache = tmp_path / "m.duckdb"
    encode_sources(teacher, "image", [str(tmp_path / "shard-{000..001}.tar"), tmp_path / "bytes.parquet"], cache)
    encode_sources(teacher, "image", [tmp_path / "paths.parquet", tmp_path / "imgs.tsv"], cache)
    keys = query(cache, "SELECT s.format, f.path, i.key FROM items i JOIN sources s ON i.source = s.source_id "
                     "JOIN source_files f ON f.source_id = i.source AND f.file_id = i.file ORDER BY ALL")
    # keys are the source's own (tar __key__, Parquet key column, TSV key); the file is its own column
    assert keys == [("parquet", "bytes.parquet", "a"), ("parquet", "bytes.parquet", "b"), ("parquet", "paths.parquet", "x"),
                    ("tsv", "imgs.tsv", "k0"), ("tsv", "imgs.tsv", "k1"), ("tsv", "imgs.tsv", "k2"),
                    *[("webdataset", f"shard-{t:03d}.tar", f"s{i}") for t in range(2) for i in range(3)]]
    errs = query(cache, "SELECT e.key, f.path, e.reason FROM errors e JOIN source_files f ON f.source_id = e.source "
                     "AND f.file_id = e.file ORDER BY ALL")
    assert errs == [("bad", "imgs.tsv", "invalid base64: Only base64 data is allowed"),
                    ("orphan", "shard-000.tar", "no image member for this key"),
                    ("orphan", "shard-001.tar", "no image member for this key")]


def test_missing_parquet_column_is_a_user_error(teacher, tmp_path):
    pq.write_table(pa.table({"caption": ["x"]}), tmp_path / "t.parquet")
    with pytest.raises(DimefmError, match="no column 'text'|no text column"):
        encode_sources(teacher, "text", [tmp_path / "t.parquet"], tmp_path / "m.duckdb", text_column="text")


def test_sentence_sources_validation_duplicates_and_truncation(teacher, tmp_path):
    long = " ".join(["word"] * 40)  # longer than the tiny teacher's 16-token context
    (tmp_path / "a.txt").write_bytes(
        b"a red circle\n\n   \nthe same twice\nthe same twice\n" + b"bad \xff\xfe utf8\n" + long.encode() + b"\n"
    )
    with open(tmp_path / "b.jsonl", "w") as f:
        f.write(json.dumps({"id": "j1", "body": "a blue square"}) + "\n")
        f.write(json.dumps({"id": "j2", "other": "x"}) + "\n")
        f.write("{not json\n")
        f.write(json.dumps({"id": "j3", "body": "a red circle"}) + "\n")  # duplicate across sources
    pq.write_table(pa.table({"sentence": ["green triangle", None, "  "]}), tmp_path / "c.parquet")
    (tmp_path / "d.tsv").write_text('k1\t{"captions": ["cap one", "cap two"]}\nk2\tplain text\nk3\n')
    cache = tmp_path / "m.duckdb"
    encode_sources(teacher, "text", [tmp_path / "a.txt"], cache)
    encode_sources(teacher, "text", [tmp_path / "b.jsonl"], cache, text_field="body", key_field="id")
    encode_sources(teacher, "text", [tmp_path / "c.parquet"], cache, text_column="sentence")
    encode_sources(teacher, "text", [tmp_path / "d.tsv"], cache)
    texts = dict(query(cache, "SELECT key, text FROM text_embeddings"))
    assert texts == {"1": "a red circle", "4": "the same twice", "7": long, "j1": "a blue square",
                     "0": "green triangle", "k1#0": "cap one", "k1#1": "cap two", "k2": "plain text"}
    errors = {(os.path.basename(u), k): r for u, k, r in query(cache, "SELECT s.uri, e.key, e.reason FROM errors e JOIN sources s ON e.source = s.source_id")}
    assert errors[("a.txt", "2")] == errors[("a.txt", "3")] == "empty or whitespace-only sentence"
    assert errors[("a.txt", "6")].startswith("invalid UTF-8") and errors[("b.jsonl", "j2")] == "missing field 'body'"
    assert errors[("b.jsonl", "3")].startswith("invalid JSON")
    assert errors[("c.parquet", "1")] == "null text" and errors[("c.parquet", "2")] == "empty or whitespace-only sentence"
    assert errors[("d.tsv", "k3")] == "no tab-separated text column"
    assert len(errors) == 8
    dups = dict(query(cache, "SELECT uri, duplicates FROM sources"))
    assert dups[str(tmp_path / "a.txt")] == 1 and dups[str(tmp_path / "b.jsonl")] == 1
    assert query(cache, "SELECT sum(truncated) FROM units")[0][0] == 1
    assert query(cache, "SELECT key FROM text_embeddings WHERE truncated") == [("7",)]


def test_seen_hashes_keep_first_occurrences_across_chunks_and_earlier_caches():
    from dimefm_pipeline.formats.planner import SeenHashes

    seen = SeenHashes([5, 9])  # cached by an earlier run
    keep = seen.keep(np.array([1, 5, 1, 2, 0]), np.array([True, True, True, True, False]))
    assert keep.tolist() == [True, False, False, True, True]  # 5 cached before, 1 twice, the invalid row kept
    rng = np.random.default_rng(0)
    all_kept = list(np.array([1, 2]))
    for _ in range(40):  # many chunks: runs are merged as they grow and every hash stays findable
        chunk = rng.integers(0, 3000, 200)
        k = seen.keep(chunk, np.ones(len(chunk), bool))
        all_kept += chunk[k].tolist()
    assert len(all_kept) == len(set(all_kept)) and len(seen) == len(all_kept) + 2
    assert len(seen.runs) <= 12 and seen.contains(np.array(all_kept)).all()


def test_captions_from_image_shards_and_caption_fields_are_sentences(teacher, tmp_path):
    with tarfile.open(tmp_path / "shard.tar", "w") as tf:
        for name, data in (("k1.jpg", _png(1)), ("k1.txt", b"a red circle on the left"), ("k2.jpg", _png(2)),
                           ("k2.json", json.dumps({"caption": "two blue squares", "url": "x"}).encode()),
                           ("k3.jpg", _png(3)), ("k4.json", b'{"url": "y"}')):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    (tmp_path / "c.jsonl").write_text(json.dumps({"caption": "a green star"}) + "\n")
    pq.write_table(pa.table({"caption": ["a small ring"]}), tmp_path / "c.parquet")
    cache = tmp_path / "m.duckdb"
    for src in ("shard.tar", "c.jsonl", "c.parquet"):
        encode_sources(teacher, "text", [tmp_path / src], cache)
    texts = dict(query(cache, "SELECT key, text FROM text_embeddings"))
    assert texts == {"k1": "a red circle on the left", "k2": "two blue squares", "1": "a green star", "0": "a small ring"}
    assert dict(query(cache, "SELECT key, reason FROM errors")) == {"k3": "no caption member (.txt or .json)",
                                                                  "k4": "missing field 'caption'"}
    used = {os.path.basename(u): json.loads(o) for u, o in query(cache, "SELECT uri, options FROM sources")}
    assert used["c.jsonl"] == {"text_field": "caption"} and used["c.parquet"]["text_column"] == "caption"
    assert used["shard.tar"] == {"text_field": "caption"}


def test_the_help_of_the_sentence_options_names_the_fields_that_are_guessed():
    from tests.conftest import run_cli

    from dimefm_pipeline.formats.base import TEXT_FIELDS

    guessed = ", ".join(TEXT_FIELDS)
    for command in (("encode", "texts"), ("corpus", "filter")):
        out = " ".join(run_cli(*command, "--help", env={"COLUMNS": "200"}).stdout.split())
        assert f"JSONL field holding the sentence (default: the first of {guessed} that the first record has)" in out
        assert f"Parquet column holding the sentence (default: the first of {guessed} that the file has)" in out
