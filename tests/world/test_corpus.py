"""Corpora on disk: real formats, deterministic bytes, unpaired sentences with distractors."""

from __future__ import annotations

import hashlib
import io
import json
import re
import tarfile

import numpy as np
import pytest
from PIL import Image

from dimefm_pipeline.core.errors import DimefmError
from dimefm_pipeline.world.checker import parse
from dimefm_pipeline.world.corpus import ImageCorpusConfig, TextCorpusConfig, corpus_image, write_images, write_texts
from dimefm_pipeline.world.vocab import all_visual_words


def _digest(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_webdataset_shards_are_byte_identical_across_runs(tmp_path):
    cfg = ImageCorpusConfig(n=25, fmt="webdataset", seed=4, per_shard=10)
    a = write_images(tmp_path / "a", cfg)
    b = write_images(tmp_path / "b", cfg)
    assert [p.name for p in a] == ["shard-00000.tar", "shard-00001.tar", "shard-00002.tar"]
    assert [_digest(p) for p in a] == [_digest(p) for p in b]
    with tarfile.open(a[1]) as tf:
        names = tf.getnames()
        assert names == [f"{i:08d}.png" for i in range(10, 20)]
        img = np.asarray(Image.open(io.BytesIO(tf.extractfile(names[3]).read())))
    assert np.array_equal(img, corpus_image(4, 13))


def test_folder_corpus_holds_decodable_pngs_in_subfolders(tmp_path):
    write_images(tmp_path / "imgs", ImageCorpusConfig(n=12, fmt="folder", seed=1, per_shard=5))
    files = sorted((tmp_path / "imgs").rglob("*.png"))
    assert [f.parent.name for f in files] == ["00000"] * 5 + ["00001"] * 5 + ["00002"] * 2
    with Image.open(files[7]) as im:
        assert im.size == (64, 64) and im.mode == "RGB"
        assert np.array_equal(np.asarray(im), corpus_image(1, 7))


def test_writing_into_a_non_empty_folder_is_refused(tmp_path):
    (tmp_path / "x").mkdir()
    (tmp_path / "x" / "keep.txt").write_text("mine")
    with pytest.raises(DimefmError, match="not an empty folder"):
        write_images(tmp_path / "x", ImageCorpusConfig(n=2))


def test_text_corpus_has_the_requested_share_of_distractors(tmp_path):
    out = write_texts(tmp_path / "s.jsonl", TextCorpusConfig(n=2000, fmt="jsonl", seed=2, distractor_share=0.3))
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["key"] for r in rows[:3]] == ["00000000", "00000001", "00000002"]
    visual = all_visual_words()
    non_visual = [r["text"] for r in rows if not set(re.findall(r"[a-z]+", r["text"])) & visual]
    assert 0.26 < len(non_visual) / len(rows) < 0.34
    described = [r["text"] for r in rows if r["text"] not in non_visual]
    assert all(parse(t)[0] or parse(t)[1] for t in described)


def test_text_corpus_is_deterministic_and_independent_of_images(tmp_path):
    from dimefm_pipeline.world.corpus import IMAGE_STREAM
    from dimefm_pipeline.world.scene import sample_scene, scene_rng

    a = write_texts(tmp_path / "a.txt", TextCorpusConfig(n=300, seed=9))
    b = write_texts(tmp_path / "b.txt", TextCorpusConfig(n=300, seed=9))
    assert a.read_bytes() == b.read_bytes()
    sentences = a.read_text().splitlines()
    assert len(sentences) == 300
    with pytest.raises(DimefmError, match="already exists"):
        write_texts(a, TextCorpusConfig(n=3))
    # unpaired: sentence i describes image i (same seed, same index) no more often than a random image
    def shapes_match(sentence, scene):
        mentioned = {m.shape for m in parse(sentence)[0]}
        return bool(mentioned) and mentioned <= {o.shape for o in scene.objects}

    scenes = [sample_scene(scene_rng(9, i, IMAGE_STREAM)) for i in range(300)]
    same = np.mean([shapes_match(t, scenes[i]) for i, t in enumerate(sentences)])
    shifted = np.mean([shapes_match(t, scenes[(i + 150) % 300]) for i, t in enumerate(sentences)])
    assert same < 0.25 and abs(same - shifted) < 0.08, (same, shifted)


def test_text_corpus_sentences_fit_the_world_teachers_context(tmp_path):
    import open_clip

    from dimefm_pipeline.core.models import register_configs

    register_configs()
    context = open_clip.get_model_config("dimefm-world-teacher")["text_cfg"]["context_length"]
    tok = open_clip.tokenizer.SimpleTokenizer()
    path = write_texts(tmp_path / "t.txt", TextCorpusConfig(n=3000, seed=1))
    lengths = [len(tok.encode(t)) + 2 for t in path.read_text().splitlines()]
    assert max(lengths) <= context  # nothing cut (without the limit, 45 of these 3,000 would be)
