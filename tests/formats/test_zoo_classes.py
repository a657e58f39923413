"""The zoo by class of failure: inputs a user's real dump holds that no earlier list named. Every
kind ends as cached or recorded with a reason a user understands (never dropped, never substituted,
never a traceback or a hang), and every source's listed entries equal what was cached, recorded or
skipped as a duplicate.

`CLASSES` lists every kind under its class with the outcome it must give; `test_every_class_has_
several_kinds` keeps the table and the tests in step. Signals, a second run on one --out or cache and
a full disk are in tests/encode/test_signals_and_disk_full.py and
tests/distill/test_signals_and_shared_out.py.
"""

from __future__ import annotations

import gzip
import io
import os
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from dimefm_pipeline.formats import parquet, streams
from dimefm_pipeline.formats.image_kinds import register_plugins
from tests.conftest import encode_sources, image_bytes, query, run_cli
from tests.formats.test_zoo import assert_refused

DATA = Path(__file__).parent / "data"
CLASSES: dict[str, dict[str, str]] = {}  # class -> kind -> outcome


def kind(cls: str, name: str, outcome: str) -> str:
    CLASSES.setdefault(cls, {})[name] = outcome
    return name


def outcomes(cache) -> tuple[dict, dict]:
    """(key -> times cached, key -> reason recorded) of a cache."""
    cached: dict = {}
    for (key,) in query(cache, "SELECT key FROM items WHERE coalesce(\"view\", 0) = 0"):
        cached[key] = cached.get(key, 0) + 1
    return cached, dict(query(cache, "SELECT key, reason FROM errors"))


def assert_accounted(cache):
    """Per source: every listed entry is cached, recorded or a duplicate."""
    rows = query(cache, "SELECT r.source, sum(r.listed), (SELECT count(*) FROM items i WHERE i.source = r.source AND "
                     "coalesce(i.\"view\", 0) = 0), (SELECT count(*) FROM errors e WHERE e.source = r.source AND "
                     "e.stage = 'encode'), (SELECT sum(duplicates) FROM units u WHERE u.source = r.source) "
                     "FROM unit_records r GROUP BY r.source")
    assert rows
    for source, listed, cached, recorded, dups in rows:
        assert listed == cached + recorded + dups, (source, listed, cached, recorded, dups)


def _tar(path, members, *, gz=False):
    """members: (name, bytes), or (name, tarfile type, link target) for links, folders and devices."""
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.GNU_FORMAT) as tf:
        for name, data, *link in members:
            info = tarfile.TarInfo(name)
            if link:
                info.type, info.linkname = data, link[0]
                tf.addfile(info)
            else:
                info.size = len(data)
                tf.addfile(info, io.BytesIO(data))
    path.write_bytes(gzip.compress(raw.getvalue(), mtime=0) if gz else raw.getvalue())


# ------------------------------------------------------------------------------ silently dropped

HEIC, JXL = (DATA / "tiny.heic").read_bytes(), (DATA / "tiny.jxl").read_bytes()
PLUGGED = register_plugins()
FORMAT_FILES = {
    kind("dropped", "AVIF image", "encoded"): ("a.avif", lambda: image_bytes(seed=1, fmt="AVIF")),
    kind("dropped", "ICO icon", "encoded"): ("b.ico", lambda: image_bytes(seed=2, fmt="ICO")),
    kind("dropped", "JPEG 2000 image", "encoded"): ("c.jp2", lambda: image_bytes(seed=3, fmt="JPEG2000")),
    kind("dropped", "HEIC image", "encoded with the images extra, else recorded: unsupported format: heic"):
        ("d.heic", lambda: HEIC),
    kind("dropped", "JPEG XL image", "encoded with the images extra, else recorded: unsupported format: jxl"):
        ("e.jxl", lambda: JXL),
    kind("dropped", "SVG drawing", "recorded: unsupported format: svg"):
        ("f.svg", lambda: b'<?xml version="1.0"?>\n<svg xmlns="http://www.w3.org/2000/svg" width="4" height="4"/>'),
    kind("dropped", "MP4 video named .jpg", "recorded: unsupported format: video"):
        ("g.jpg", lambda: b"\x00\x00\x00\x18ftypmp42\x00\x00\x00\x00mp42isom" + bytes(64)),
}
TAR_LINKS = [
    kind("dropped", "tar: symlink to a member", "encoded"),
    kind("dropped", "tar: hardlink to a member", "encoded"),
    kind("dropped", "tar: hardlink in a gzip-compressed tar", "encoded"),
    kind("dropped", "tar: symlink out of the archive (..)", "recorded: symlink outside the archive"),
    kind("dropped", "tar: symlink to an absolute path", "recorded: symlink outside the archive"),
    kind("dropped", "tar: member with an absolute name", "recorded: leaves the archive"),
    kind("dropped", "tar: member whose name climbs out with ..", "recorded: leaves the archive"),
    kind("dropped", "tar: symlink to a member not in the archive", "recorded: symlink to a member not in the archive"),
    kind("dropped", "tar: symlink loop", "recorded: symlink loop"),
    kind("dropped", "tar: FIFO member named .jpg", "recorded: member is a FIFO"),
    kind("dropped", "tar: member without an extension", "recorded: no image member for this key"),
]


def test_extra_image_formats_are_encoded_or_recorded_as_unsupported(teacher, tmp_path):
    root = tmp_path / "imgs"
    root.mkdir()
    for name, make in FORMAT_FILES.values():
        (root / name).write_bytes(make())
    cache = tmp_path / "m.duckdb"
    encode_sources(teacher, "image", [root], cache)
    cached, reasons = outcomes(cache)
    assert {"a.avif", "b.ico", "c.jp2"} <= set(cached)
    for name, ext in (("d.heic", "heic"), ("e.jxl", "jxl")):
        if ext in PLUGGED:
            assert cached.get(name) == 1, reasons.get(name)
        else:
            assert reasons[name] == f"unsupported format: {ext} (install the images extra: pip install 'dimefm[images]')"
    assert reasons["f.svg"] == "unsupported format: svg" and reasons["g.jpg"] == "unsupported format: video"
    assert len(cached) + len(reasons) == len(FORMAT_FILES)
    assert_accounted(cache)


BLOCK_PLUGINS = "import sys; sys.modules['pillow_heif'] = sys.modules['pillow_jxl'] = None; " \
                "from dimefm_pipeline.cli import main; sys.argv[0] = 'dimefm'; main()"


def test_without_the_images_extra_heic_and_jxl_are_recorded_as_unsupported(teacher, tmp_path):
    root = tmp_path / "imgs"
    root.mkdir()
    (root / "d.heic").write_bytes(HEIC)
    (root / "e.jxl").write_bytes(JXL)
    (root / "ok.png").write_bytes(image_bytes(seed=4))
    cache = tmp_path / "m.duckdb"
    r = subprocess.run([sys.executable, "-c", BLOCK_PLUGINS, "encode", "images", str(root), "--cache", str(cache),
                        "--teacher", str(teacher[0]), "--pretrained", str(teacher[1]), "--workers", "0"],
                       capture_output=True, text=True, env={**os.environ, "PYTHONWARNINGS": "ignore"}, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    cached, reasons = outcomes(cache)
    assert cached == {"ok.png": 1}
    assert reasons == {"d.heic": "unsupported format: heic (install the images extra: pip install 'dimefm[images]')",
                       "e.jxl": "unsupported format: jxl (install the images extra: pip install 'dimefm[images]')"}
    r = run_cli("info", "--cache", cache)
    assert r.returncode == 0 and "unsupported format: heic" in r.stdout and "unsupported format: jxl" in r.stdout


def test_tar_links_follow_the_archive_and_never_leave_it(teacher, tmp_path):
    a, b = image_bytes(seed=10, fmt="JPEG"), image_bytes(seed=11)
    _tar(tmp_path / "l-0.tar", [
        ("a.jpg", a), ("dir", tarfile.DIRTYPE, ""), ("dir/b.png", b),
        ("sym.jpg", tarfile.SYMTYPE, "a.jpg"), ("dir/up.png", tarfile.SYMTYPE, "../a.jpg"),
        ("hard.jpg", tarfile.LNKTYPE, "dir/b.png"),
        ("out.jpg", tarfile.SYMTYPE, "../../etc/passwd"), ("abs.jpg", tarfile.SYMTYPE, "/etc/passwd"),
        ("/abs/x.jpg", image_bytes(seed=12)), ("../climb.jpg", image_bytes(seed=13)), ("gone.jpg", tarfile.SYMTYPE, "nowhere.jpg"),
        ("loop1.jpg", tarfile.SYMTYPE, "loop2.jpg"), ("loop2.jpg", tarfile.SYMTYPE, "loop1.jpg"),
        ("pipe.jpg", tarfile.FIFOTYPE, ""), ("README", b"no extension"),
    ])
    _tar(tmp_path / "l-1.tar", [("c.png", image_bytes(seed=14)), ("h.png", tarfile.LNKTYPE, "c.png")], gz=True)
    cache = tmp_path / "m.duckdb"
    encode_sources(teacher, "image", [tmp_path / "l-{0..1}.tar"], cache)
    cached, reasons = outcomes(cache)
    assert cached == {"a": 1, "dir/b": 1, "sym": 1, "dir/up": 1, "hard": 1, "c": 1, "h": 1}
    assert reasons["out"] == "symlink outside the archive: ../../etc/passwd"
    assert reasons["abs"] == "symlink outside the archive: /etc/passwd"
    assert "leaves the archive" in reasons["/abs/x"] and "leaves the archive" in reasons["../climb"]
    assert reasons["gone"] == "symlink to a member not in the archive: nowhere.jpg"
    assert reasons["loop1"] == reasons["loop2"] == "symlink loop in the archive"
    assert reasons["pipe"] == "member is a FIFO, not a file" and reasons["README"] == "no image member for this key"
    assert len(reasons) == 9, reasons
    # a link's row reads its target's bytes, in place
    payload = dict(query(cache, "SELECT key, \"offset\" FROM image_embeddings WHERE NOT packed"))
    assert payload["sym"] == payload["a"] == payload["dir/up"] and payload["hard"] == payload["dir/b"]
    assert_accounted(cache)


# ------------------------------------------------------------------ unbounded memory or time

BOUNDED = [
    kind("bounded", "sparse file with a 1 TB apparent size", "recorded: too large"),
    kind("bounded", "PNG whose header says 20000 x 20000", "recorded: too many pixels"),
    kind("bounded", "tar.gz member over --max-image-bytes", "recorded: too large"),
    kind("bounded", "tar.gz that expands without end (a gzip bomb)", "recorded: decompression bomb"),
    kind("bounded", "Parquet cell over --max-image-bytes", "recorded: too large"),
    kind("bounded", "Parquet row group whose image column is over its bound", "recorded: too large (each row, none read)"),
    kind("bounded", "Parquet sentence cell of 5 MB", "recorded: text too long"),
    kind("bounded", "TSV base64 field over --max-image-bytes", "recorded: too large"),
    kind("bounded", "sentence of one 100,000-letter word", "encoded (cut before tokenizing, marked truncated)"),
    kind("bounded", "sentence line of 5 MB", "recorded: line too long"),
]


def test_one_input_costs_bounded_time_and_memory(teacher, tmp_path, monkeypatch):
    import base64

    root = tmp_path / "imgs"
    root.mkdir()
    with open(root / "sparse.jpg", "wb") as f:
        f.truncate(10**12)  # 1 TB apparent size, no block on disk
    big = Image.new("L", (20000, 20000))
    big.save(root / "huge.png", optimize=True)
    (root / "ok.png").write_bytes(image_bytes(seed=20))
    _tar(tmp_path / "t-0.tar.gz", [("m.png", bytes(8 << 20)), ("n.png", image_bytes(seed=21))], gz=True)
    monkeypatch.setattr(streams, "MIN_EXPANSION_BYTES", 32 << 20)  # the bounds, small enough for a test
    monkeypatch.setitem(parquet.MAX_ROW_GROUP_BYTES, "image", 64 << 20)
    _tar(tmp_path / "t-1.tar.gz", [("p.png", image_bytes(seed=22)), ("zeros.bin", bytes(64 << 20)), ("q.png", image_bytes(seed=23))], gz=True)
    pq.write_table(pa.table({"key": ["pbig", "pok"], "image": [bytes(8 << 20), image_bytes(seed=24)]}), tmp_path / "p.parquet")
    pq.write_table(pa.table({"key": [f"g{i}" for i in range(24)], "image": [bytes([i]) * (3 << 20) for i in range(24)]}),
                   tmp_path / "g.parquet")
    (tmp_path / "i.tsv").write_text(f"tbig\t{'A' * (12 << 20)}\ntok\t{base64.b64encode(image_bytes(seed=25)).decode()}\n")
    cache = tmp_path / "m.duckdb"
    t0 = time.monotonic()
    encode_sources(teacher, "image", [root, tmp_path / "t-{0..1}.tar.gz", tmp_path / "p.parquet", tmp_path / "g.parquet",
                               tmp_path / "i.tsv"], cache, max_image_bytes=4 << 20)
    assert time.monotonic() - t0 < 30
    cached, reasons = outcomes(cache)
    assert set(cached) == {"ok.png", "n", "p", "pok", "tok"}
    assert reasons["sparse.jpg"] == "too large: 1.0 TB > --max-image-bytes (4.2 MB)"
    assert reasons["huge.png"].startswith("too many pixels: 20000 x 20000 = 400.0 MP > --max-image-pixels")
    assert reasons["m"].startswith("too large: 8.4 MB") and reasons["pbig"].startswith("too large: 8.4 MB")
    assert reasons["tbig"].startswith("too large: the line is over")
    group = query(cache, "SELECT DISTINCT reason FROM errors WHERE reason LIKE '%row group%'")
    assert group == [("too large: Parquet row group 0 holds 75.5 MB of 'image', over 67.1 MB: rewrite the file with "
                      "smaller row groups",)] and query(cache, "SELECT count(*) FROM errors WHERE reason LIKE '%row group 0 holds%'")[0][0] == 24
    assert reasons[""].startswith("damaged tar: decompression bomb")  # the rest of the tar after the bound
    assert_accounted(cache)
    long_word, long_line = "x" * 100_000, "y " * (5 << 19)
    (tmp_path / "s.txt").write_text(f"{long_word}\n{long_line}\na short sentence\n")
    pq.write_table(pa.table({"key": ["huge", "fine"], "text": ["z" * (5 << 20), "a fine sentence"]}), tmp_path / "t.parquet")
    t0 = time.monotonic()
    encode_sources(teacher, "text", [tmp_path / "s.txt", tmp_path / "t.parquet"], cache)
    assert time.monotonic() - t0 < 20
    texts = dict(query(cache, "SELECT key, truncated FROM text_embeddings"))
    assert texts == {"1": True, "3": False, "fine": False}
    assert dict(query(cache, "SELECT key, reason FROM errors WHERE key = 'huge'"))["huge"] == "text too long: 5.2 MB > 4.2 MB"
    assert dict(query(cache, "SELECT key, reason FROM errors WHERE key = '2'"))["2"] == "line too long: more than 4.2 MB"


# ------------------------------------------------------------------------ the same data twice

TWICE = [
    kind("twice", "a folder given directly and through a symlink", "encoded once, the second a duplicate source"),
    kind("twice", "a folder spelt with ..", "encoded once, the second a duplicate source"),
    kind("twice", "a sentence file and a hardlink to it", "encoded once, the second a duplicate source"),
    kind("twice", "the same sentence file twice in one command", "encoded once, the second a duplicate source"),
    kind("twice", "a cached folder given again through a symlink", "continued as the cached source"),
    kind("twice", "a folder inside a cached folder reached through a symlink", "refused: is already cached"),
]


def test_the_same_data_reached_twice_is_encoded_once(teacher, tmp_path):
    from tests.conftest import write_images

    write_images(tmp_path / "data" / "imgs", 5, size=(16, 16), seed=1)
    os.symlink(tmp_path / "data" / "imgs", tmp_path / "link")
    cache = tmp_path / "m.duckdb"
    t = ["--teacher", teacher[0], "--pretrained", teacher[1], "--workers", "0"]
    r = run_cli("encode", "images", tmp_path / "data" / "imgs", tmp_path / "link",
                f"{tmp_path}/data/imgs/../imgs", "--cache", cache, *t)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "link is a duplicate source: the same folder as" in r.stderr, r.stderr
    assert "imgs is given twice: encoded once" in r.stderr  # the `..` spelling is the same path
    assert query(cache, "SELECT count(*), count(DISTINCT key) FROM items")[0] == (5, 5)
    assert query(cache, "SELECT count(*) FROM sources")[0][0] == 1
    (tmp_path / "s.txt").write_text("one sentence\nanother sentence\n")
    os.link(tmp_path / "s.txt", tmp_path / "hard.txt")
    r = run_cli("encode", "texts", tmp_path / "s.txt", tmp_path / "hard.txt", tmp_path / "s.txt", "--cache", cache, *t)
    assert r.returncode == 0 and "hard.txt is a duplicate source: the same files as" in r.stderr, r.stderr
    assert "s.txt is given twice: encoded once" in r.stderr
    assert query(cache, "SELECT count(*) FROM items WHERE modality = 'text'")[0][0] == 2
    before = query(cache, "SELECT item_id, key FROM items ORDER BY item_id")
    r = run_cli("encode", "images", tmp_path / "link", "--cache", cache, *t)  # a later command, another spelling
    assert r.returncode == 0 and "reached by another path: continued as that source" in r.stderr, r.stderr
    assert query(cache, "SELECT item_id, key FROM items ORDER BY item_id") == before  # nothing lost, nothing added
    assert query(cache, "SELECT count(*) FROM sources WHERE modality = 'image'")[0][0] == 1
    assert_refused(run_cli("encode", "images", tmp_path / "link" / "sub", "--cache", cache, *t), "is already cached")
    assert query(cache, "SELECT item_id, key FROM items ORDER BY item_id") == before


# ----------------------------------------------------------------------- text that is not text

NOT_TEXT = [
    kind("not text", "a line of zero-width spaces", "recorded: empty after removing invisible characters"),
    kind("not text", "a line of Hangul fillers and a word joiner", "recorded: empty after removing invisible characters"),
    kind("not text", "a line of combining marks only", "recorded: empty after removing invisible characters"),
    kind("not text", "a line of braille blanks", "recorded: empty after removing invisible characters"),
    kind("not text", "Parquet binary keys", "encoded (key as UTF-8 text)"),
    kind("not text", "Parquet binary keys that are not UTF-8", "encoded (key as hex)"),
    kind("not text", "Parquet integer, timestamp and list keys", "encoded (key as decimal, ISO 8601, JSON)"),
    kind("not text", "a UTF-16 text file with a byte-order mark (LE and BE)", "encoded"),
]
JSON_KINDS = [
    kind("json", "JSONL: nesting 100,000 deep", "recorded: invalid JSON: nested too deeply"),
    kind("json", "JSONL: an integer of 5,000 digits", "recorded: invalid JSON"),
    kind("json", "JSONL: a lone UTF-16 surrogate in the sentence", "recorded: lone UTF-16 surrogate"),
    kind("json", "JSONL: a lone surrogate in the key", "encoded (key escaped)"),
    kind("json", "JSONL: a struct as the key", "encoded (key as JSON)"),
    kind("json", "TSV: captions JSON nested too deeply", "recorded: invalid JSON: nested too deeply"),
    kind("json", "tar: a .json caption nested too deeply", "recorded: invalid JSON"),
]


def test_text_that_is_not_text_and_pathological_json_are_recorded(teacher, tmp_path):
    (tmp_path / "a.txt").write_text("\u200b\u200b \u200b\n\u3164\u3164\u2060\n\u0301\u0301\n\u2800\u2800\nreal words\n")
    pq.write_table(pa.table({"key": [b"k1", b"\xff\xfe"], "text": ["bytes key", "hex key"]}), tmp_path / "b.parquet")
    pq.write_table(pa.table({"key": [7], "text": ["int key"]}), tmp_path / "i.parquet")
    pq.write_table(pa.table({"key": pa.array([1_700_000_000_000_000], pa.timestamp("us")), "text": ["time key"]}),
                   tmp_path / "t.parquet")
    pq.write_table(pa.table({"key": [[1, 2]], "text": ["list key"]}), tmp_path / "l.parquet")
    (tmp_path / "le.txt").write_bytes("\ufeffutf sixteen le\nsecond le line\n".encode("utf-16-le"))
    (tmp_path / "be.txt").write_bytes("\ufeffutf sixteen be\n".encode("utf-16-be"))
    deep = "[" * 100_000 + "]" * 100_000
    lines = ['{"id": "d", "text": ' + deep + "}", '{"id": "n", "text": "x", "n": ' + "9" * 5000 + "}",
             '{"id": "s", "text": "bad \\ud800 surrogate"}', '{"id": "k\\udc00", "text": "surrogate key"}',
             '{"id": {"a": 1}, "text": "struct key"}']
    (tmp_path / "j.jsonl").write_text("\n".join(lines) + "\n")
    (tmp_path / "c.tsv").write_text(f"tk\t{{\"captions\": {deep}}}\n")
    _tar(tmp_path / "caps.tar", [("cj.json", ('{"caption": ' + deep + "}").encode())])
    cache = tmp_path / "m.duckdb"
    encode_sources(teacher, "text", [tmp_path / "a.txt"], cache)
    for name in ("b", "i", "t", "l"):
        encode_sources(teacher, "text", [tmp_path / f"{name}.parquet"], cache)
    encode_sources(teacher, "text", [tmp_path / "le.txt", tmp_path / "be.txt"], cache)
    encode_sources(teacher, "text", [tmp_path / "j.jsonl"], cache, key_field="id")
    for name in ("c.tsv", "caps.tar"):
        with pytest.raises(Exception, match="every record .* would be skipped .*invalid JSON"):
            encode_sources(teacher, "text", [tmp_path / name], cache)
    texts = sorted(query(cache, "SELECT regexp_extract(source, '[^/]+$'), key, text FROM text_embeddings"))
    assert texts == sorted([("a.txt", "5", "real words"), ("b.parquet", "k1", "bytes key"), ("b.parquet", "fffe", "hex key"),
                            ("i.parquet", "7", "int key"), ("t.parquet", "2023-11-14T22:13:20", "time key"),
                            ("l.parquet", "[1, 2]", "list key"), ("le.txt", "1", "utf sixteen le"),
                            ("le.txt", "2", "second le line"), ("be.txt", "1", "utf sixteen be"),
                            ("j.jsonl", "k\\udc00", "surrogate key"), ("j.jsonl", '{"a": 1}', "struct key")])
    invisible = query(cache, "SELECT e.key, e.reason FROM errors e JOIN sources s ON s.source_id = e.source "
                          "WHERE s.uri LIKE '%a.txt' ORDER BY e.key")
    assert invisible == [(k, "empty after removing invisible characters") for k in ("1", "2", "3", "4")]
    reasons = dict(query(cache, "SELECT e.key, e.reason FROM errors e JOIN sources s ON s.source_id = e.source "
                             "WHERE s.uri LIKE '%j.jsonl'"))  # a line that is not JSON has no key field: its number
    assert reasons["1"] == "invalid JSON: nested too deeply" and reasons["2"].startswith("invalid JSON: Exceeds the limit")
    assert reasons["s"] == "lone UTF-16 surrogate in sentence: not text" and len(reasons) == 3
    assert_accounted(cache)


# ----------------------------------------------------------------------- silent success on nothing

EMPTY = [
    kind("empty", "a Parquet image source with zero rows, alone", "refused: nothing to encode"),
    kind("empty", "an empty folder beside a good source", "encoded, with a warning naming the empty one"),
    kind("empty", "an empty sentence file beside a good one", "encoded, with a warning naming the empty one"),
    kind("empty", "an empty tar beside a good source", "encoded, with a warning naming the empty one"),
    kind("empty", "every source of a command empty", "refused: nothing to encode"),
]


def test_empty_sources_are_named_and_a_command_of_only_empty_sources_fails(teacher, tmp_path):
    t = ["--teacher", teacher[0], "--pretrained", teacher[1], "--workers", "0"]
    pq.write_table(pa.table({"key": pa.array([], pa.string()), "image": pa.array([], pa.binary())}), tmp_path / "z.parquet")
    assert_refused(run_cli("encode", "images", tmp_path / "z.parquet", "--cache", tmp_path / "a.duckdb", *t),
                   "nothing to encode: ")
    assert not (tmp_path / "a.duckdb").exists()
    (tmp_path / "empty").mkdir()
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x.png").write_bytes(image_bytes(seed=30))
    _tar(tmp_path / "e.tar", [])
    r = run_cli("encode", "images", tmp_path / "empty", tmp_path / "full", tmp_path / "e.tar", tmp_path / "z.parquet",
                "--cache", tmp_path / "b.duckdb", *t)
    assert r.returncode == 0, r.stderr[-2000:]
    warned = [line for line in r.stderr.splitlines() if line.startswith("warning: ")]
    assert len(warned) == 3 and all(any(str(tmp_path / n) in w for w in warned) for n in ("empty", "e.tar", "z.parquet"))
    (tmp_path / "none.txt").write_text("")
    (tmp_path / "some.txt").write_text("a sentence\n")
    r = run_cli("encode", "texts", tmp_path / "none.txt", tmp_path / "some.txt", "--cache", tmp_path / "b.duckdb", *t)
    assert r.returncode == 0 and "none.txt holds no sentences" in r.stderr, r.stderr[-2000:]
    assert_refused(run_cli("encode", "texts", tmp_path / "none.txt", "--cache", tmp_path / "b.duckdb", *t),
                   "nothing to encode")
    assert_refused(run_cli("encode", "images", tmp_path / "e.tar", "--cache", tmp_path / "c.duckdb", *t),
                   "nothing to encode")


# ------------------------------------------------------------------- left over from round one

LEFTOVER = [
    kind("leftover", "an image name that is not UTF-8", "recorded: not valid UTF-8"),
    kind("leftover", "a folder name that is not UTF-8", "recorded: not valid UTF-8"),
    kind("leftover", "a tar member name that is not UTF-8", "encoded (key escaped)"),
    kind("leftover", "a TSV caption row with an empty captions list", "recorded: empty 'captions' list"),
    kind("leftover", "a TSV caption row whose JSON has no captions list", "recorded: no 'captions' list"),
    kind("leftover", "a TSV caption row of four fields", "recorded: 4 tab-separated fields"),
    kind("leftover", "an existing cache folder that is not writable", "refused: cannot write to the cache folder"),
]


def test_names_that_are_not_utf8_and_caption_rows_of_the_wrong_shape_are_recorded(teacher, tmp_path):
    root = tmp_path / "imgs"
    root.mkdir()
    (root / os.fsdecode(b"bad-\xff.png")).write_bytes(image_bytes(seed=40))
    (root / os.fsdecode(b"dir-\xfe")).mkdir()
    (root / os.fsdecode(b"dir-\xfe") / "in.png").write_bytes(image_bytes(seed=41))
    (root / "good.png").write_bytes(image_bytes(seed=42))
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.GNU_FORMAT, encoding="utf-8", errors="surrogateescape") as tf:
        info = tarfile.TarInfo(os.fsdecode(b"t-\xff.png"))
        data = image_bytes(seed=43)
        info.size = len(data)
        tf.addfile(info, io.BytesIO(data))
    (tmp_path / "n.tar").write_bytes(raw.getvalue())
    cache = tmp_path / "m.duckdb"
    encode_sources(teacher, "image", [root, tmp_path / "n.tar"], cache)
    cached, reasons = outcomes(cache)
    assert cached == {"good.png": 1, "t-\\xff": 1}
    assert reasons == {"bad-\\xff.png": "file name is not valid UTF-8: rename it to encode it",
                       "dir-\\xfe/in.png": "file name is not valid UTF-8: rename it to encode it"}
    (tmp_path / "c.tsv").write_text('k1\t{"captions": []}\nk2\t{"caps": 1}\nk3\ta\tb\tc\nk4\t{"captions": ["fine", 5]}\n')
    encode_sources(teacher, "text", [tmp_path / "c.tsv"], cache)
    cached, reasons = outcomes(cache)
    assert cached.get("k4#0") == 1 and reasons["k4#1"] == "caption is not a string"
    assert reasons["k1"] == "empty 'captions' list" and reasons["k3"] == "4 tab-separated fields, expected 2 (key, text)"
    assert reasons["k2"] == "JSON column has no 'captions' list"
    assert_accounted(cache)


def _drop_file_permission_override():
    """In the child: as root, give up the capabilities that ignore file permissions, so a folder's
    mode is obeyed as it is for any other user (a no-op when not root)."""
    import ctypes

    if os.geteuid() == 0:
        libc = ctypes.CDLL(None, use_errno=True)
        for cap in (1, 2):  # CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH
            libc.prctl(24, cap, 0, 0, 0)  # PR_CAPBSET_DROP: gone from the program exec'd next


def test_a_cache_folder_that_is_not_writable_is_one_error_line(teacher, tmp_path):
    (tmp_path / "imgs").mkdir()
    (tmp_path / "imgs" / "x.png").write_bytes(image_bytes(seed=50))
    cache = tmp_path / "m.duckdb"
    r = run_cli("encode", "images", tmp_path / "imgs", "--cache", cache, "--teacher", teacher[0], "--pretrained", teacher[1])
    assert r.returncode == 0
    (tmp_path / "imgs" / "y.png").write_bytes(image_bytes(seed=51))
    (tmp_path / "more").mkdir()
    (tmp_path / "more" / "y.png").write_bytes(image_bytes(seed=51))
    os.chmod(tmp_path / "m", 0o555)
    try:
        r = subprocess.run([sys.executable, "-m", "dimefm_pipeline", "encode", "images", str(tmp_path / "more"), "--cache",
                            str(cache)], capture_output=True, text=True, preexec_fn=_drop_file_permission_override,
                           env={**os.environ, "PYTHONWARNINGS": "ignore"}, timeout=300)
    finally:
        os.chmod(tmp_path / "m", 0o755)
    assert_refused(r, "cannot write to the cache folder")
    assert query(cache, "SELECT count(*) FROM items")[0][0] == 1  # nothing already written is lost


def test_every_class_has_several_kinds():
    assert set(CLASSES) == {"dropped", "bounded", "twice", "not text", "json", "empty", "leftover"}
    for cls, kinds in CLASSES.items():
        assert len(kinds) >= 4, cls
        for name, outcome in kinds.items():
            assert outcome.split(":")[0].split(",")[0].split(" ")[0] in ("encoded", "recorded", "refused", "continued"), name
