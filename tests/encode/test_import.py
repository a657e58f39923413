"""Teacher rows from clip-retrieval's `inference` output (`encode --embeddings-from`): a fixture in
that tool's layout and order (inputs dealt round-robin to partitions, unreadable and caption-less
samples without a row), imported by key, checked against the teacher, then mined and distilled; a
wrong teacher and rows shifted against their metadata are refused."""

from __future__ import annotations

import io
import json
import math
import shutil
import tarfile
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from PIL import Image

from dimefm_pipeline.core import models
from dimefm_pipeline.core.errors import DimefmError
from dimefm_pipeline.encode.config import EncodeConfig
from dimefm_pipeline.encode.run import encode
from dimefm_pipeline.store.manifest import Manifest
from tests.conftest import TINY_STUDENT, query, run_cli, write_tiny_teacher


# ------------------------------------------------------------------ the tool's layout, as it writes it
def _partition_tag(i: int, count: int) -> str:
    return str(i).zfill(int(math.log10(count)) + 1)


def _write_partition(out: Path, i: int, count: int, img: list, txt: list, names: list, captions: list) -> None:
    """One partition as its writer leaves it: img_emb/img_emb_N.npy, text_emb/text_emb_N.npy and
    metadata/metadata_N.parquet (image_path, caption), rows in the order the partition read them."""
    tag = _partition_tag(i, count)
    columns = {}
    if img:
        (out / "img_emb").mkdir(parents=True, exist_ok=True)
        np.save(out / "img_emb" / f"img_emb_{tag}.npy", np.concatenate(img))
        columns["image_path"] = names
    if txt:
        (out / "text_emb").mkdir(parents=True, exist_ok=True)
        np.save(out / "text_emb" / f"text_emb_{tag}.npy", np.concatenate(txt))
        columns["caption"] = captions
    (out / "metadata").mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.table(columns), out / "metadata" / f"metadata_{tag}.parquet")


def _embed(loaded, *, image=None, text=None) -> np.ndarray:
    """The tool's mapper: features / their norm, cast to float16."""
    with torch.no_grad():
        f = loaded.model.encode_image(loaded.preprocess(image)[None]) if image is not None else \
            loaded.model.encode_text(loaded.tokenizer([text]))
    return (f / f.norm(dim=-1, keepdim=True)).to(torch.float16).numpy()


def clip_retrieval_files(folder: str, out: Path, loaded, write_batch_size: int) -> None:
    """`clip-retrieval inference --input_format files --input_dataset FOLDER` over a folder of images
    without captions: the sorted relative paths, partition p taking every count-th from p; an image it
    cannot open has no row; `image_path` is the folder as given joined with the relative path."""
    root = Path(folder)
    keys = sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.suffix.lower() in (".jpg", ".png"))
    count = math.ceil(len(keys) / write_batch_size)
    for i in range(count):
        img, names = [], []
        for key in keys[i::count]:
            try:
                image = Image.open(root / key)
                row = _embed(loaded, image=image)
            except OSError:
                continue  # "Failed to load image ... Skipping."
            img.append(row)
            names.append(str(root / key))
        if img:
            _write_partition(out, i, count, img, [], names, [])


def clip_retrieval_webdataset(tars: list[Path], out: Path, loaded, per_file: int, write_batch_size: int) -> None:
    """`--input_format webdataset` with images and captions: the partition count is estimated from
    `wds_number_file_per_input_file`, tars are dealt round-robin to partitions, each reading its tars
    in order; a sample without a .jpg or a .txt is left out; image_path is its __key__, caption its .txt."""
    count = math.ceil(len(tars) * per_file / write_batch_size)
    for i in range(count):
        img, txt, names, captions = [], [], [], []
        for t in tars[i::count]:
            samples: dict = {}
            with tarfile.open(t) as tf:
                for m in tf.getmembers():
                    key, _, ext = m.name.partition(".")
                    samples.setdefault(key, {})[ext] = tf.extractfile(m).read()
            for key, sample in samples.items():
                if "jpg" not in sample or "txt" not in sample:
                    continue
                caption = sample["txt"].decode("utf-8")
                img.append(_embed(loaded, image=Image.open(io.BytesIO(sample["jpg"]))))
                txt.append(_embed(loaded, text=caption))
                names.append(key)
                captions.append(caption)
        _write_partition(out, i, count, img, txt, names, captions)


# ------------------------------------------------------------------ data
def _photo(rng, w, h) -> Image.Image:
    """A smooth, photo-like picture: gradients and a blob, so crops and resizes stay meaningful."""
    y, x = np.mgrid[0:h, 0:w] / max(w, h)
    c = rng.uniform(0, 1, (3, 3))
    arr = np.stack([c[k, 0] * x + c[k, 1] * y + c[k, 2] * np.exp(-((x - c[0, k]) ** 2 + (y - c[1, k]) ** 2) * 8)
                    for k in range(3)], -1)
    return Image.fromarray((255 * arr / arr.max()).clip(0, 255).astype(np.uint8))


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("import")
    rng = np.random.default_rng(3)
    photos = root / "data" / "photos"
    for i in range(20):
        sub = photos / ("2023" if i % 3 else "2024")
        sub.mkdir(parents=True, exist_ok=True)
        _photo(rng, 40 + 7 * (i % 4), 32 + 5 * (i % 3)).save(sub / f"IMG_{i:04d}.jpg", quality=90)
    (photos / "2024" / "IMG_broken.jpg").write_bytes(b"\xff\xd8\xff not really a jpeg")
    tars = []
    for t in range(2):
        path = root / "shards" / f"{t:05d}.tar"
        path.parent.mkdir(exist_ok=True)
        with tarfile.open(path, "w") as tf:
            for j in range(6):
                key = f"{t:05d}{j:04d}"
                buf = io.BytesIO()
                _photo(rng, 48, 36).save(buf, "JPEG")
                members = {"jpg": buf.getvalue(), "json": json.dumps({"key": key, "status": "success"}).encode()}
                if j != 4:  # one sample without a caption: the tool leaves it out
                    members["txt"] = f"a photo number {t * 6 + j} of a hill".encode()
                for ext, payload in members.items():
                    info = tarfile.TarInfo(f"{key}.{ext}")
                    info.size = len(payload)
                    tf.addfile(info, io.BytesIO(payload))
        tars.append(path)
    cfg, ckpt = write_tiny_teacher(root / "teacher")
    other = write_tiny_teacher(root / "other", name="other-teacher", seed=5)
    loaded = models.build(models.resolve_spec(str(cfg), str(ckpt)), quiet=True)
    clip_retrieval_files(str(photos), root / "emb-files", loaded, write_batch_size=6)  # 21 inputs: 4 partitions
    clip_retrieval_webdataset(tars, root / "emb-wds", loaded, per_file=6, write_batch_size=6)
    wrong = models.build(models.resolve_spec(str(other[0]), str(other[1])), quiet=True)
    clip_retrieval_files(str(photos), root / "emb-other", wrong, write_batch_size=6)
    _photo(rng, 44, 30).save(photos / "2024" / "IMG_late.jpg")  # added after the tool ran: no row
    return root, (cfg, ckpt), loaded


def _cfg(data, modality, sources, cache, **kw):
    root, (cfg, ckpt), _ = data
    return EncodeConfig(modality, tuple(str(s) for s in sources), str(cache), teacher=str(cfg), pretrained=str(ckpt),
                        workers=0, batch_size=5, shard_size=8, **kw)


# ------------------------------------------------------------------ tests
def test_the_fixture_is_in_the_tools_layout_and_order(data):
    root = data[0]
    files = sorted(p.name for p in (root / "emb-files").rglob("*") if p.is_file())
    assert files == [f"{s}_{i}.{e}" for s, e in (("img_emb", "npy"), ("metadata", "parquet")) for i in range(4)]
    first = pq.read_table(root / "emb-files" / "metadata" / "metadata_0.parquet").column("image_path").to_pylist()
    # every 4th of the 21 sorted paths (13 in 2023/, then 8 in 2024/), less the broken one
    assert [Path(p).relative_to(root / "data" / "photos").as_posix() for p in first] == [
        "2023/IMG_0001.jpg", "2023/IMG_0007.jpg", "2023/IMG_0013.jpg", "2023/IMG_0019.jpg", "2024/IMG_0009.jpg"]
    assert sorted(p.name for p in (root / "emb-wds").rglob("*.npy")) == ["img_emb_0.npy", "img_emb_1.npy",
                                                                        "text_emb_0.npy", "text_emb_1.npy"]
    assert np.load(root / "emb-files" / "img_emb" / "img_emb_0.npy").dtype == np.float16


def test_import_by_key_then_mine_and_distill(data, tmp_path):
    root, _, loaded = data
    photos = root / "data" / "photos"
    cache = tmp_path / "m" / "run.duckdb"
    s = encode(_cfg(data, "image", [photos, *sorted((root / "shards").glob("*.tar"))], cache,
                    embeddings_from=str(root / "emb-files")), progress=False)
    # 20 photos have a row; the broken one is an error, the late one and the 12 tar images are encoded
    assert (s.items, s.imported, s.errors) == (33, 20, 1)
    assert s.import_check.items == 20 and s.import_check.min_cosine > 0.999
    rows = {k: (imp, np.asarray(e, np.float32)) for k, imp, e in query(
        cache, "SELECT i.key, it.imported, i.embedding FROM image_embeddings i JOIN items it "
               "ON it.source = i.source_id AND it.file = i.file_id AND it.pos = i.pos")}
    tool = {}
    for meta in sorted((root / "emb-files" / "metadata").glob("*.parquet")):
        emb = np.load(root / "emb-files" / "img_emb" / meta.name.replace("metadata", "img_emb").replace(".parquet", ".npy"))
        for path, e in zip(pq.read_table(meta).column("image_path").to_pylist(), emb):
            tool[Path(path).relative_to(photos).as_posix()] = e.astype(np.float32)
    for key, e in tool.items():
        imported, cached = rows[key]
        assert imported and np.abs(cached - e).max() < 1e-3, key  # the tool's row, found by key
    late = rows["2024/IMG_late.jpg"]  # no row: the teacher's own
    assert late[0] is False
    assert np.abs(late[1] - _embed(loaded, image=Image.open(photos / "2024" / "IMG_late.jpg"))[0]).max() < 2e-3
    assert query(cache, "SELECT count(*) FROM items WHERE imported")[0][0] == 20
    assert query(cache, "SELECT modality, partitions, \"rows\", checked FROM imports") == [("image", 4, 20, 20)]
    (tmp_path / "s.txt").write_text("".join(f"a photo of hill number {i}\n" for i in range(24)))
    encode(_cfg(data, "text", [tmp_path / "s.txt"], cache), progress=False)
    student = tmp_path / "student.json"
    student.write_text(json.dumps(TINY_STUDENT))
    assert run_cli("mine", "--cache", cache, "--k", "3").returncode == 0
    r = run_cli("distill", "--cache", cache, "--out", tmp_path / "out", "--student", student, "--batch-size", "8",
                "--steps", "3", "--workers", "0", "--augment", "none", "--mined-share", "0.5")
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "out" / "open_clip_model.safetensors").exists()


def test_images_and_captions_of_a_webdataset_import_from_one_output(data, tmp_path):
    root = data[0]
    tars = sorted((root / "shards").glob("*.tar"))
    cache = tmp_path / "run.duckdb"
    images = encode(_cfg(data, "image", tars, cache, embeddings_from=str(root / "emb-wds")), progress=False)
    texts = encode(_cfg(data, "text", tars, cache, embeddings_from=str(root / "emb-wds")), progress=False)
    assert (images.items, images.imported) == (12, 10)  # the caption-less samples have no row: encoded
    assert (texts.items, texts.imported) == (10, 10)  # by their text
    assert query(cache, "SELECT modality, count(*) FILTER (WHERE imported) FROM items GROUP BY 1 ORDER BY 1") == [
        ("image", 10), ("text", 10)]


@pytest.mark.parametrize("fault", ["another teacher", "rows shifted"])
def test_an_import_the_teacher_disagrees_with_is_refused_and_leaves_nothing(data, tmp_path, fault):
    root = data[0]
    photos = root / "data" / "photos"
    cache = tmp_path / "run.duckdb"
    encode(_cfg(data, "image", [sorted((root / "shards").glob("*.tar"))[0]], cache), progress=False)  # a cache before
    if fault == "another teacher":
        folder = root / "emb-other"
    else:  # each partition's embeddings one row off their metadata
        folder = tmp_path / "shifted"
        shutil.copytree(root / "emb-files", folder)
        for npy in (folder / "img_emb").glob("*.npy"):
            np.save(npy, np.roll(np.load(npy), 1, axis=0))
    with pytest.raises(DimefmError, match=r"disagrees with teacher tiny-teacher .* below cosine 0.99 .* nothing was imported") as info:
        encode(_cfg(data, "image", [photos], cache, embeddings_from=str(folder)), progress=False)
    with Manifest(cache, read_only=True) as man:
        assert man.query("SELECT count(*) FROM sources").fetchall()[0][0] == 1
        assert man.query("SELECT count(*), count(*) FILTER (WHERE status = 'complete') FROM runs").fetchall()[0] == (1, 1)
        assert man.query("SELECT count(*) FROM imports").fetchall()[0][0] == 0
    r = run_cli("encode", "images", photos, "--cache", cache, "--embeddings-from", folder)
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1 and "error: " in r.stderr, r.stderr


def test_an_output_of_other_items_or_another_dimension_is_refused(data, tmp_path):
    root = data[0]
    tars = sorted((root / "shards").glob("*.tar"))
    with pytest.raises(DimefmError, match="has no row for any image read from"):  # file paths vs tar keys
        encode(_cfg(data, "image", tars, tmp_path / "a.duckdb", embeddings_from=str(root / "emb-files")), progress=False)
    wide = tmp_path / "wide"
    shutil.copytree(root / "emb-files", wide)
    np.save(wide / "img_emb" / "img_emb_0.npy", np.zeros((6, 64), np.float16))
    with pytest.raises(DimefmError, match="holds 64-d embeddings but the teacher's are 32-d"):
        encode(_cfg(data, "image", [root / "data" / "photos"], tmp_path / "b.duckdb", embeddings_from=str(wide)),
               progress=False)


def test_an_export_in_the_tools_layout_imports_back_whole(data, tmp_path):
    root = data[0]
    cache = tmp_path / "a.duckdb"
    encode(_cfg(data, "image", [root / "data" / "photos"], cache, views=2), progress=False)
    (tmp_path / "s.txt").write_text("a hill\na photo of a hill\nfog\n")
    encode(_cfg(data, "text", [tmp_path / "s.txt"], cache), progress=False)
    r = run_cli("export", "clip-retrieval", "--cache", cache, "--out", tmp_path / "emb", "--rows-per-partition", "8")
    assert r.returncode == 0, r.stderr
    names = sorted(p.relative_to(tmp_path / "emb").as_posix() for p in (tmp_path / "emb").rglob("*") if p.is_file())
    assert names == ["img_emb/img_emb_0.npy", "img_emb/img_emb_1.npy", "img_emb/img_emb_2.npy",
                     *[f"metadata/metadata_{i}.parquet" for i in range(4)], "text_emb/text_emb_3.npy"]
    meta = pq.read_table(tmp_path / "emb" / "metadata" / "metadata_0.parquet")
    assert meta.column_names == ["image_path", "source", "file", "pos"] and meta.num_rows == 8  # view 0 of 8 images
    again = encode(_cfg(data, "image", [root / "data" / "photos"], tmp_path / "b.duckdb", embeddings_from=str(tmp_path / "emb")),
                   progress=False)
    assert (again.items, again.imported) == (21, 21)
    texts = encode(_cfg(data, "text", [tmp_path / "s.txt"], tmp_path / "b.duckdb", embeddings_from=str(tmp_path / "emb")),
                   progress=False)
    assert (texts.items, texts.imported) == (3, 3)
