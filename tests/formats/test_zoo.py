"""A zoo of bad input, hostile layouts and user mistakes: every kind is encoded correctly, recorded and
skipped with its reason, or refused with one `error:` line and exit code 2. Nothing hangs, nothing
is dropped without a record, nothing is substituted, nothing already written is lost.

Item-level kinds share one encode per container format (the good items of the same run must be
encoded); user mistakes each run the real CLI. `KINDS` below lists every kind with what it must
give; `test_the_zoo_has_every_kind` keeps the list and the tests in step.
"""

from __future__ import annotations

import base64
import gzip
import io
import json
import os
import shutil
import tarfile

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image


from dimefm_pipeline.core.errors import DimefmError
from tests.conftest import encode_sources, image_bytes, query, run_cli, write_images

# kind -> (format, what it must give): "encoded", "recorded: <reason>", "refused: <message>", "ignored"
KINDS: dict[str, tuple[str, str]] = {}


def kind(name: str, fmt: str, outcome: str) -> str:
    KINDS[name] = (fmt, outcome)
    return name


def _outcomes(cache) -> tuple[set, dict]:
    """(keys encoded, key -> reason recorded) of a cache."""
    keys = {r[0] for r in query(cache, "SELECT key FROM items")}
    reasons = {}
    for key, reason in query(cache, "SELECT key, reason FROM errors"):
        reasons.setdefault(key, reason)
    return keys, reasons


def assert_refused(r, message: str):
    lines = r.stderr.strip().splitlines()
    assert r.returncode == 2, (r.returncode, r.stderr[-2000:])
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in r.stderr, r.stderr[-2000:]
    assert message in lines[0], lines[0]


# ------------------------------------------------------------------------------------ image folder

FOLDER = {
    kind("good PNG", "folder", "encoded"): ("good.png", lambda: image_bytes()),
    kind("zero-byte file", "folder", "recorded: zero-byte file"): ("zero.png", lambda: b""),
    kind("truncated PNG", "folder", "recorded: corrupt or truncated"): ("truncated.png", lambda: image_bytes(seed=1)[:200]),
    kind("text file named .jpg", "folder", "recorded: not an image"): ("text.jpg", lambda: b"hello, not an image"),
    kind("TIFF", "folder", "encoded"): ("img.tif", lambda: image_bytes(fmt="TIFF")),
    kind("upper-case .TIFF", "folder", "encoded"): ("IMG2.TIFF", lambda: image_bytes(seed=2, fmt="TIFF")),
    kind("upper-case .JPG", "folder", "encoded"): ("UPPER.JPG", lambda: image_bytes(seed=3, fmt="JPEG")),
    kind("CMYK JPEG", "folder", "encoded"): ("cmyk.jpg", lambda: image_bytes("CMYK", fmt="JPEG")),
    kind("16-bit PNG", "folder", "encoded"): ("sixteen.png", lambda: _sixteen_bit()),
    kind("palette PNG", "folder", "encoded"): ("palette.png", lambda: image_bytes("P", seed=4)),
    kind("animated GIF", "folder", "encoded"): ("anim.gif", lambda: _gif()),
    kind("RGBA PNG", "folder", "encoded"): ("alpha.png", lambda: image_bytes("RGBA", seed=5)),
    kind("greyscale PNG", "folder", "encoded"): ("grey.png", lambda: image_bytes("L", seed=6)),
    kind("PNG bytes named .jpg", "folder", "encoded"): ("png_named.jpg", lambda: image_bytes(seed=7)),
    kind("1 x 1 pixel image", "folder", "encoded"): ("tiny.png", lambda: image_bytes(size=(1, 1))),
    kind("WebP", "folder", "encoded"): ("img.webp", lambda: image_bytes(seed=8, fmt="WEBP")),
    kind("BMP", "folder", "encoded"): ("img.bmp", lambda: image_bytes(seed=9, fmt="BMP")),
    kind("2000 x 10 strip (200:1)", "folder", "recorded: aspect ratio"): ("strip.png", lambda: image_bytes(size=(2000, 10))),
    kind("AppleDouble ._ file", "folder", "recorded: not an image"): ("._good.png", lambda: b"\x00\x05\x16\x07junk"),
    kind("image four folders deep", "folder", "encoded"): ("deep/a/b/c/d.png", lambda: image_bytes(seed=10)),
    kind("folder named like an image", "folder", "encoded"): ("x.jpg/inner.png", lambda: image_bytes(seed=11)),
}
FOLDER_SPECIAL = {
    kind("dangling symlink", "folder", "recorded: unreadable file"): "dangling.png",
    kind("FIFO named .jpg", "folder", "recorded: not a regular file"): "fifo.jpg",
    kind("file name not valid UTF-8", "folder", "recorded: not valid UTF-8"): "bad-\\xff.png",
    kind("symlink loop to a parent folder", "folder", "recorded: already listed"): "loop",
    kind("symlink to a good image", "folder", "encoded"): "link.png",
    kind("sidecar files (.json, .txt)", "folder", "ignored"): "meta.json",
    kind("folder that cannot be listed", "folder", "recorded: cannot list folder"): "locked",
}


def _sixteen_bit() -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.arange(64, dtype=np.uint16).reshape(8, 8) * 1000).save(buf, format="PNG")
    return buf.getvalue()


def _gif() -> bytes:
    buf = io.BytesIO()
    frames = [Image.new("RGB", (8, 8), c) for c in ("red", "blue")]
    frames[0].save(buf, format="GIF", save_all=True, append_images=frames[1:])
    return buf.getvalue()


def test_image_folder_zoo(teacher, tmp_path, monkeypatch):
    root = tmp_path / "imgs"
    for name, make in FOLDER.values():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(make())
    os.symlink(root / "missing-target.png", root / "dangling.png")
    os.mkfifo(root / "fifo.jpg")
    (root / os.fsdecode(b"bad-\xff.png")).write_bytes(image_bytes(seed=12))
    os.symlink(root, root / "deep" / "loop")
    os.symlink(root / "good.png", root / "link.png")
    (root / "meta.json").write_text("{}")
    (root / "notes.txt").write_text("notes")
    (root / "locked").mkdir()
    (root / "locked" / "hidden.png").write_bytes(image_bytes(seed=13))
    real_scandir = os.scandir

    def scandir(path="."):  # this test runs as root, whom permissions do not stop: the OS refusal is simulated
        if not isinstance(path, int) and os.fspath(path).endswith("locked"):
            raise PermissionError(13, "Permission denied", os.fspath(path))
        return real_scandir(path)

    monkeypatch.setattr(os, "scandir", scandir)
    cache = tmp_path / "m.duckdb"
    summary = encode_sources(teacher, "image", [root], cache, workers=2)  # the FIFO must not hang either worker
    keys, reasons = _outcomes(cache)
    expected_keys = {n for k, (n, _) in FOLDER.items() if KINDS[k][1] == "encoded"} | {"link.png"}
    assert keys == expected_keys
    for k, (name, _) in FOLDER.items():
        if KINDS[k][1].startswith("recorded"):
            assert KINDS[k][1].split(": ", 1)[1] in reasons[name], (k, reasons.get(name))
    assert "not a regular file" in reasons["fifo.jpg"] and "unreadable file" in reasons["dangling.png"]
    assert "not valid UTF-8" in reasons["bad-\\xff.png"]
    assert "already listed" in reasons[os.path.join("deep", "loop")] and "cannot list folder" in reasons["locked"]
    assert summary.other_files == {".json": 1, ".txt": 1}
    assert summary.errors == len(reasons)
    assert query(cache, "SELECT other_files FROM sources")[0][0] == '{".json": 1, ".txt": 1}'


# --------------------------------------------------------------------------------------------- tars

def _tar(path, members, *, gz=False):
    """members: (name, bytes) files, or (name, tarfile type, link target) for folders and links."""
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w") as tf:
        for name, data, *link in members:
            info = tarfile.TarInfo(name)
            if link:
                info.type, info.linkname = data, link[0]
                tf.addfile(info)
            else:
                info.size = len(data)
                tf.addfile(info, io.BytesIO(data))
    data = raw.getvalue()
    path.write_bytes(gzip.compress(data, mtime=0) if gz else data)
    return data


TAR_KINDS = [
    kind("tar: members of a key not contiguous", "webdataset", "encoded"),
    kind("tar: key with only a .json", "webdataset", "recorded: no image member"),
    kind("tar: zero-byte image member", "webdataset", "recorded: zero-byte file"),
    kind("tar: corrupt image member", "webdataset", "recorded: not an image"),
    kind("tar: cut off mid-member", "webdataset", "recorded: damaged tar"),
    kind("tar: garbage named .tar", "webdataset", "recorded: unreadable tar"),
    kind("tar: empty tar", "webdataset", "ignored"),
    kind("tar: folder members named like images (shots.jpg/)", "webdataset", "ignored"),
    kind("tar: symlink member to an image of the archive", "webdataset", "encoded"),
    kind("tar: gzip-compressed but named .tar", "webdataset", "encoded"),
    kind("tar: members in a sub-folder", "webdataset", "encoded"),
    kind("tar: key with dots (a.001.jpg)", "webdataset", "encoded"),
    kind("tar: the same key in two tars", "webdataset", "encoded"),
    kind("tar: .tar.gz source", "webdataset", "encoded"),
]


def test_tar_zoo(teacher, tmp_path):
    d = tmp_path / "tars"
    d.mkdir()
    _tar(d / "z-00.tar", [("a.jpg", image_bytes(seed=1, fmt="JPEG")), ("b.jpg", image_bytes(seed=2, fmt="JPEG")), ("a.json", b"{}"),
                          ("meta.json", b"{}"), ("zero.jpg", b""), ("bad.png", b"\x89PNG\r\n\x1a\nbroken"),
                          ("dir", tarfile.DIRTYPE, ""), ("dir/k.jpg", image_bytes(seed=3, fmt="JPEG")),
                          ("dots.001.jpg", image_bytes(seed=4, fmt="JPEG")), ("shots.jpg", tarfile.DIRTYPE, ""),
                          ("link.jpg", tarfile.SYMTYPE, "a.jpg")])
    full = _tar(d / "tmp.tar", [("c0.png", image_bytes(seed=5)), ("c1.png", image_bytes(seed=6)), ("c2.png", image_bytes(seed=7))])
    with tarfile.open(d / "tmp.tar") as tf:
        last = tf.getmembers()[-1]
    (d / "z-01.tar").write_bytes(full[: last.offset_data + last.size // 2])  # cut inside the last member
    (d / "tmp.tar").unlink()
    (d / "z-02.tar").write_bytes(b"this is not a tar archive at all" * 40)
    _tar(d / "z-03.tar", [])
    _tar(d / "z-04.tar", [("g.png", image_bytes(seed=8)), ("shots.jpg", tarfile.DIRTYPE, ""), ("a.jpg", image_bytes(seed=9, fmt="JPEG")),
                          ("link.jpg", tarfile.SYMTYPE, "g.png")], gz=True)
    _tar(tmp_path / "whole.tar.gz", [("h.png", image_bytes(seed=10))], gz=True)
    cache = tmp_path / "m.duckdb"
    encode_sources(teacher, "image", [d / "z-{00..04}.tar", tmp_path / "whole.tar.gz"], cache, workers=2)
    got = query(cache, "SELECT f.path, i.key FROM items i JOIN source_files f ON f.source_id = i.source AND f.file_id = i.file")
    assert sorted(got) == sorted([("z-00.tar", "a"), ("z-00.tar", "b"), ("z-00.tar", "dir/k"), ("z-00.tar", "dots"),
                                  ("z-00.tar", "link"), ("z-01.tar", "c0"), ("z-01.tar", "c1"), ("z-04.tar", "g"),
                                  ("z-04.tar", "a"), ("z-04.tar", "link"), ("whole.tar.gz", "h")])
    errors = {(f, k): r for f, k, r in query(cache, "SELECT f.path, e.key, e.reason FROM errors e JOIN source_files f "
                                                    "ON f.source_id = e.source AND f.file_id = e.file")}
    assert errors[("z-00.tar", "meta")] == "no image member for this key"
    assert errors[("z-00.tar", "zero")] == "zero-byte file" and errors[("z-00.tar", "bad")] == "not an image"
    assert errors[("z-01.tar", "")].startswith("damaged tar") and errors[("z-02.tar", "")].startswith("unreadable tar")
    assert errors[("z-01.tar", "c2")].startswith("short read")  # its header survived the cut, its bytes did not
    assert ("z-00.tar", "a") not in errors  # its .json came after another key: grouped, not an error
    assert len(errors) == 6  # the folders named like images are not entries; the links read their targets
    assert query(cache, "SELECT repeated_keys FROM sources WHERE format = 'webdataset' ORDER BY source_id")[0][0] == 2  # a, link
    packed = dict(query(cache, "SELECT f.path, bool_and(p.packed) FROM image_embeddings p JOIN source_files f "
                               "ON f.source_id = p.source_id AND f.file_id = p.file_id GROUP BY ALL"))
    assert packed == {"z-00.tar": False, "z-01.tar": False, "z-04.tar": True, "whole.tar.gz": True}


# ------------------------------------------------------------------------------------------ Parquet

PARQUET_KINDS = [
    kind("Parquet: repeated keys", "parquet", "encoded"),
    kind("Parquet: null image cell", "parquet", "recorded: null image"),
    kind("Parquet: integer image cell", "parquet", "recorded: holds int"),
    kind("Parquet: path to a missing file", "parquet", "recorded: unreadable file"),
    kind("Parquet: relative path", "parquet", "encoded"),
    kind("Parquet: null key cell", "parquet", "encoded"),
    kind("Parquet: corrupt data page", "parquet", "recorded: unreadable Parquet row group"),
    kind("Parquet: HF {bytes, path} struct", "parquet", "encoded"),
    kind("Parquet: not a Parquet file", "parquet", "refused: cannot read Parquet"),
]


def _corrupt_parquet(path, n_groups=3, rows=4):
    """A Parquet file whose middle row group's data page is overwritten with garbage."""
    data = [image_bytes(seed=100 + i) for i in range(n_groups * rows)]
    pq.write_table(pa.table({"key": [f"r{i}" for i in range(len(data))], "image": data}), path, row_group_size=rows,
                   compression="none")
    meta = pq.ParquetFile(path).metadata
    col = meta.row_group(1).column(1)
    raw = bytearray(path.read_bytes())
    raw[col.data_page_offset : col.data_page_offset + 64] = b"\xff" * 64  # the page header
    path.write_bytes(bytes(raw))


def test_parquet_zoo(teacher, tmp_path):
    (tmp_path / "rel.png").write_bytes(image_bytes(seed=20))
    pq.write_table(pa.table({"key": ["a", "b", "a", None, "c"], "image": [image_bytes(seed=21), None, image_bytes(seed=22), image_bytes(seed=23),
                                                                           image_bytes(seed=24)]}), tmp_path / "bytes.parquet")
    pq.write_table(pa.table({"key": ["i1", "i2"], "image": [7, 3]}), tmp_path / "ints.parquet")
    pq.write_table(pa.table({"key": ["p1", "p2"], "path": ["rel.png", "gone.png"]}), tmp_path / "paths.parquet")
    pq.write_table(pa.table({"key": ["s1"], "image": [{"bytes": image_bytes(seed=25), "path": None}]}), tmp_path / "hf.parquet")
    _corrupt_parquet(tmp_path / "corrupt.parquet")
    cache = tmp_path / "m.duckdb"
    for name in ("bytes", "ints", "paths", "hf", "corrupt"):
        encode_sources(teacher, "image", [tmp_path / f"{name}.parquet"], cache)
    keys = sorted(query(cache, "SELECT coalesce(key, '<null>') FROM items"))
    corrupt_ok = [f"r{i}" for i in (0, 1, 2, 3, 8, 9, 10, 11)]
    assert keys == sorted([("a",), ("a",), ("<null>",), ("c",), ("p1",), ("s1",)] + [(k,) for k in corrupt_ok])
    errors = dict(query(cache, "SELECT key, reason FROM errors WHERE key IS NOT NULL"))
    assert errors["b"] == "null image" and errors["i1"] == errors["i2"] == "image cell holds int, not bytes or a path"
    assert errors["p2"].startswith("unreadable file")
    damaged = [r[0] for r in query(cache, "SELECT reason FROM errors WHERE key IS NULL ORDER BY reason")]
    assert [d[:35] for d in damaged] == [f"unreadable Parquet row group 1 (row {i})"[:35] for i in range(4, 8)]
    assert query(cache, "SELECT repeated_keys FROM sources ORDER BY source_id")[0][0] == 1  # a twice; null is no key
    (tmp_path / "fake.parquet").write_text("not parquet")
    r = run_cli("encode", "images", tmp_path / "fake.parquet", "--cache", cache)
    assert_refused(r, "cannot read Parquet")


# -------------------------------------------------------------------------------------------- TSV

TSV_KINDS = [
    kind("TSV: invalid base64", "tsv", "recorded: invalid base64"),
    kind("TSV: line without a tab", "tsv", "recorded: no tab-separated image column"),
    kind("TSV: CRLF line ends", "tsv", "encoded"),
    kind("TSV: blank lines", "tsv", "ignored"),
]


def test_image_tsv_zoo(teacher, tmp_path):
    lines = [f"k0\t{base64.b64encode(image_bytes(seed=30)).decode()}", "bad\tnot*base64", "notab", "",
             f"k1\t{base64.b64encode(image_bytes(seed=31)).decode()}\r", ""]
    (tmp_path / "i.tsv").write_text("\n".join(lines) + "\n")
    cache = tmp_path / "m.duckdb"
    encode_sources(teacher, "image", [tmp_path / "i.tsv"], cache)
    keys, reasons = _outcomes(cache)
    assert keys == {"k0", "k1"} and reasons["bad"].startswith("invalid base64")
    assert reasons["notab"] == "no tab-separated image column" and len(reasons) == 2


# ---------------------------------------------------------------------------------------- sentences

TEXT_KINDS = [
    kind("text: UTF-8 byte-order mark", "txt", "encoded"),
    kind("text: CRLF line ends", "txt", "encoded"),
    kind("text: invalid UTF-8", "txt", "recorded: invalid UTF-8"),
    kind("text: empty line", "txt", "recorded: empty or whitespace-only"),
    kind("text: NUL byte", "txt", "recorded: NUL byte"),
    kind("text: sentence longer than the context", "txt", "encoded"),
    kind("JSONL: invalid JSON", "jsonl", "recorded: invalid JSON"),
    kind("JSONL: missing field", "jsonl", "recorded: missing field"),
    kind("JSONL: field not a string", "jsonl", "recorded: is not a string"),
    kind("JSONL: null key", "jsonl", "encoded"),
    kind("JSONL: every record misses the field", "jsonl", "refused: --text-field"),
    kind("Parquet text: integer cell", "parquet", "recorded: holds int"),
    kind("Parquet text: list cell", "parquet", "recorded: holds list"),
    kind("TSV text: three fields", "tsv", "recorded: 3 tab-separated fields"),
    kind("the same sentence file twice in one command", "txt", "encoded: once, with a warning"),
]


def test_sentence_zoo(teacher, tmp_path):
    long = " ".join(["word"] * 40)
    (tmp_path / "a.txt").write_bytes(b"\xef\xbb\xbfa red circle\r\nbad \xff utf8\n\n nul \x00 here\n" + long.encode() + b"\n")
    (tmp_path / "b.txt").write_text("a red circle\n")  # the BOM-less twin of a.txt's first line: a duplicate
    with open(tmp_path / "c.jsonl", "w") as f:
        for obj in ({"id": "j1", "text": "blue square"}, {"id": "j2"}, {"id": "j3", "text": 5}, {"id": None, "text": "green star"}):
            f.write(json.dumps(obj) + "\n")
        f.write("{broken\n")
    pq.write_table(pa.table({"text": pa.array([5, 6], pa.int64())}), tmp_path / "ints.parquet")
    pq.write_table(pa.table({"text": [["x"], ["y", "z"]], "key": ["l1", "l2"]}), tmp_path / "lists.parquet")
    (tmp_path / "d.tsv").write_text("k1\tone field\nk2\ttoo\tmany\n")
    cache = tmp_path / "m.duckdb"
    encode_sources(teacher, "text", [tmp_path / "a.txt", tmp_path / "b.txt"], cache)
    encode_sources(teacher, "text", [tmp_path / "c.jsonl"], cache, key_field="id")
    encode_sources(teacher, "text", [tmp_path / "d.tsv"], cache)
    for name in ("ints", "lists"):
        with pytest.raises(DimefmError, match="every record .* would be skipped .*holds"):
            encode_sources(teacher, "text", [tmp_path / f"{name}.parquet"], cache)
    texts = sorted((k or "<null>", t) for k, t in query(cache, "SELECT key, text FROM text_embeddings"))
    assert texts == sorted([("1", "a red circle"), ("5", long), ("j1", "blue square"), ("<null>", "green star"),
                            ("k1", "one field")])
    reasons = {k: r for k, r in query(cache, "SELECT key, reason FROM errors")}
    assert reasons["2"].startswith("invalid UTF-8") and reasons["3"].startswith("empty") and reasons["4"] == "NUL byte in sentence"
    assert reasons["j2"] == "missing field 'text'" and reasons["j3"] == "field 'text' is not a string"
    assert reasons["5"].startswith("invalid JSON") and reasons["k2"] == "3 tab-separated fields, expected 2 (key, text)"
    assert query(cache, "SELECT sum(duplicates) FROM sources")[0][0] == 1  # the BOM did not make a second sentence
    assert query(cache, "SELECT sum(truncated) FROM units")[0][0] == 1
    r = run_cli("encode", "texts", tmp_path / "c.jsonl", "--cache", tmp_path / "n.duckdb", "--teacher", teacher[0],
                "--pretrained", teacher[1], "--text-field", "caption")
    assert_refused(r, "is --text-field right?")
    before = {p.name: p.read_bytes() for p in (tmp_path / "m").rglob("*") if p.is_file() and p.suffix != ".lock"}
    items = query(cache, "SELECT count(*) FROM items")[0][0]
    r = run_cli("encode", "texts", tmp_path / "a.txt", tmp_path / "a.txt", "--cache", cache)
    assert r.returncode == 0 and "a.txt is given twice: encoded once" in r.stderr, r.stderr
    after = {p.name: p.read_bytes() for p in (tmp_path / "m").rglob("*") if p.is_file() and p.suffix != ".lock"}
    assert after == before and query(cache, "SELECT count(*) FROM items")[0][0] == items  # nothing lost, nothing twice


# ------------------------------------------------------------------------------------ user mistakes

MISTAKES = [
    kind("encode --precision bogus", "cli", "refused: --precision must be one of"),
    kind("a source that does not exist", "cli", "refused: no such file or folder"),
    kind("a glob that matches nothing", "cli", "refused: no file matches"),
    kind("a glob that matches folders", "cli", "encoded"),
    kind("a folder whose name holds [ ]", "cli", "encoded"),
    kind("a folder inside a folder already cached", "cli", "refused: is already cached as part of source"),
    kind("--cache under a file", "cli", "refused: cannot create the manifest's folder"),
    kind("--cache on a read-only file system", "cli", "refused: cannot create the manifest's folder"),
    kind("--cache not ending in .duckdb", "cli", "refused: must end in .duckdb"),
    kind("--cache that is not a DuckDB file", "cli", "refused: is not a DuckDB manifest"),
    kind("a FIFO as a source", "cli", "refused: is not a regular file"),
    kind("a sentence file given to encode images", "cli", "refused: unsupported image source"),
    kind("a failed first encode leaves no manifest and no folder (a --cache typo)", "cli", "refused: no manifest at"),
    kind("distill --out is a file", "cli", "refused: is a file, not a folder"),
    kind("distill --steps -5", "cli", "refused: --steps must be at least 1"),
    kind("distill --batch-size 1", "cli", "refused: batch sizes must be at least 2"),
    kind("distill on a cache without images", "cli", "refused: holds no image embeddings"),
]


def test_user_mistakes_are_one_error_line(teacher, tmp_path):
    t = ["--teacher", teacher[0], "--pretrained", teacher[1]]
    write_images(tmp_path / "data" / "sub", 3, size=(16, 16), seed=1, subdirs=False)
    write_images(tmp_path / "data" / "other", 2, size=(16, 16), seed=2, subdirs=False)
    cache = tmp_path / "m.duckdb"
    assert_refused(run_cli("encode", "images", tmp_path / "data", "--cache", cache, "--precision", "bogus", *t),
                   "--precision must be one of")
    assert_refused(run_cli("encode", "images", tmp_path / "nope", "--cache", cache, *t), "no such file or folder")
    assert_refused(run_cli("encode", "images", tmp_path / "*.tar", "--cache", cache, *t), "no file matches")
    r = run_cli("encode", "images", tmp_path / "data" / "*", "--cache", cache, *t)  # two folders: two sources
    assert r.returncode == 0, r.stderr
    assert query(cache, "SELECT count(*) FROM sources")[0][0] == 2
    assert_refused(run_cli("encode", "images", tmp_path / "data", "--cache", cache), "is already cached as part of source")
    brackets = tmp_path / "set [v2]"
    write_images(brackets, 2, size=(16, 16), seed=3)
    r = run_cli("encode", "images", brackets, "--cache", tmp_path / "b.duckdb", *t)
    assert r.returncode == 0, r.stderr
    (tmp_path / "afile").write_text("x")
    assert_refused(run_cli("encode", "images", brackets, "--cache", tmp_path / "afile" / "m.duckdb", *t),
                   "cannot create the manifest's folder")
    assert_refused(run_cli("encode", "images", brackets, "--cache", "/proc/dimefm/m.duckdb", *t),
                   "cannot create the manifest's folder")
    assert_refused(run_cli("encode", "images", brackets, "--cache", tmp_path / "m.db", *t), "must end in .duckdb")
    (tmp_path / "fake.duckdb").write_text("not a database")
    assert_refused(run_cli("info", "--cache", tmp_path / "fake.duckdb"), "is not a DuckDB manifest")
    os.mkfifo(tmp_path / "pipe.tar")
    assert_refused(run_cli("encode", "images", tmp_path / "pipe.tar", "--cache", tmp_path / "f.duckdb", *t), "is not a regular file")
    (tmp_path / "s.txt").write_text("a sentence\nanother one\nand a third\n")
    assert_refused(run_cli("encode", "images", tmp_path / "s.txt", "--cache", tmp_path / "g.duckdb", *t), "unsupported image source")
    assert_refused(run_cli("encode", "texts", tmp_path / "s.txt", "--cache", tmp_path / "typo" / "new.duckdb"),
                   "no manifest at")
    assert not (tmp_path / "typo").exists()
    assert_refused(run_cli("encode", "images", tmp_path / "data", "--cache", tmp_path / "deep" / "er" / "new.duckdb",
                           "--teacher", tmp_path / "no-such-model.json"), "model config not found")
    assert not (tmp_path / "deep").exists()
    (tmp_path / "out.txt").write_text("x")
    distill = ["distill", "--cache", cache, "--workers", "0", "--augment", "none"]
    assert_refused(run_cli(*distill, "--out", tmp_path / "out.txt", "--steps", "2", "--batch-size", "2",
                           "--student", teacher[0]), "is a file, not a folder")
    assert_refused(run_cli(*distill, "--out", tmp_path / "o", "--steps", "-5"), "--steps must be at least 1")
    assert_refused(run_cli(*distill, "--out", tmp_path / "o", "--batch-size", "1"), "batch sizes must be at least 2")
    r = run_cli("encode", "texts", tmp_path / "s.txt", "--cache", tmp_path / "t.duckdb", *t)
    assert r.returncode == 0, r.stderr
    assert_refused(run_cli("distill", "--cache", tmp_path / "t.duckdb", "--out", tmp_path / "o", "--student", teacher[0]),
                   "holds no image embeddings")


# ------------------------------------------------------------------------------------ dimefm sql

SQL_ESCAPES = {
    kind("sql: DELETE", "sql", "refused: is read-only"): "DELETE FROM items",
    kind("sql: COPY over a cache shard", "sql", "refused: is read-only"): "COPY (SELECT 1) TO '{shard}'",
    kind("sql: EXPORT DATABASE", "sql", "refused: is read-only"): "EXPORT DATABASE '{tmp}/export'",
    kind("sql: ATTACH read-write", "sql", "refused: is read-only"): "ATTACH '{tmp}/other.duckdb' (READ_WRITE)",
    kind("sql: CHECKPOINT", "sql", "refused: is read-only"): "CHECKPOINT",
    kind("sql: SET a setting", "sql", "refused: is read-only"): "SET enable_external_access = true",
    kind("sql: read a file outside the cache", "sql", "refused: Permission Error"): "SELECT * FROM read_text('{tmp}/secret.txt')",
    kind("sql: list a folder outside the cache", "sql", "refused: Permission Error"): "SELECT * FROM glob('/root/*')",
    kind("sql: climb out of the cache with ..", "sql", "refused: Permission Error"):
        "SELECT * FROM read_text('{cache_dir}/../secret.txt')",
    kind("sql: two statements", "sql", "refused: one statement at a time"): "SELECT 1; SELECT 2",
}


def test_sql_reads_the_cache_and_nothing_else(teacher, tmp_path):
    write_images(tmp_path / "imgs", 4, size=(16, 16))
    cache = tmp_path / "m" / "c.duckdb"
    encode_sources(teacher, "image", [tmp_path / "imgs"], cache)
    (tmp_path / "m" / "secret.txt").write_text("secret")
    (tmp_path / "secret.txt").write_text("secret")
    shard = next((tmp_path / "m" / "c" / "image").glob("*-000.npy"))
    before = shard.read_bytes()
    for k, escape in SQL_ESCAPES.items():
        q = escape.format(shard=shard, tmp=tmp_path, cache_dir=tmp_path / "m" / "c")
        assert_refused(run_cli("sql", "--cache", cache, q), KINDS[k][1].split(": ", 1)[1])
    assert shard.read_bytes() == before and not (tmp_path / "export").exists() and not (tmp_path / "other.duckdb").exists()
    r = run_cli("sql", "--cache", cache, "SELECT count(*) AS n FROM image_embeddings", "--csv")
    assert r.returncode == 0 and r.stdout.splitlines() == ["n", "4"], r.stderr
    r = run_cli("sql", "--cache", cache, "SELECT * FROM range(120)", "--csv")  # CSV: every row, not 50
    assert r.returncode == 0 and len(r.stdout.splitlines()) == 121
    r = run_cli("sql", "--cache", cache, "SELECT * FROM range(120)")
    assert "showing 50 of 120 rows" in r.stdout


# ------------------------------------------------------------------------------------- integrity

INTEGRITY = [
    kind("a flipped byte in a Parquet shard", "cache", "refused: info --verify exits 1"),
    kind("a deleted text Parquet shard", "cache", "refused: info --verify exits 1"),
    kind("a file in the cache the manifest does not know", "cache", "refused: info --verify exits 1"),
    kind("a flipped byte in an embedding shard", "cache", "refused: distill will not start"),
    kind("a flipped byte in a locator file", "cache", "refused: distill will not start"),
]


def test_integrity_findings(teacher, tmp_path):
    write_images(tmp_path / "imgs", 6, size=(16, 16))
    (tmp_path / "s.txt").write_text("".join(f"sentence {i}\n" for i in range(8)))
    cache = tmp_path / "m" / "c.duckdb"
    encode_sources(teacher, "image", [tmp_path / "imgs"], cache)
    encode_sources(teacher, "text", [tmp_path / "s.txt"], cache)
    assert run_cli("info", "--cache", cache, "--verify").returncode == 0
    cdir = tmp_path / "m" / "c"

    def flip(path, at=-100):
        raw = bytearray(path.read_bytes())
        raw[at] ^= 0xFF
        path.write_bytes(bytes(raw))

    pristine = tmp_path / "pristine"
    shutil.copytree(cdir, pristine)
    flip(next((cdir / "image").glob("*.parquet")))
    next((cdir / "text").glob("*.parquet")).unlink()
    (cdir / "image" / "stray.npy").write_bytes(b"x")
    r = run_cli("info", "--cache", cache, "--verify")
    assert r.returncode == 1, r.stderr
    assert "Parquet file does not match its checksum" in r.stdout and "missing Parquet file" in r.stdout
    assert "file not in the manifest" in r.stdout and "3 finding(s)" in r.stderr
    for pattern in ("*-000.npy", "*.loc.npy"):
        shutil.rmtree(cdir)
        shutil.copytree(pristine, cdir)
        flip(sorted(p for p in (cdir / "image").glob(pattern) if pattern != "*-000.npy" or ".loc" not in p.name)[0])
        r = run_cli("distill", "--cache", cache, "--out", tmp_path / f"o{pattern[2:5]}", "--student", teacher[0],
                    "--steps", "1", "--batch-size", "2")
        assert_refused(r, "no longer matches its sampled checksum")


def test_the_zoo_has_every_kind():
    """The closing table of kinds: at least 40, each with an outcome a test checks."""
    assert len(KINDS) >= 40, len(KINDS)
    for name, (fmt, outcome) in KINDS.items():
        assert outcome.split(":")[0] in ("encoded", "recorded", "refused", "ignored"), name
