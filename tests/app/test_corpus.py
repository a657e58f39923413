"""`dimefm corpus prompts|filter`: class-name prompts and vocabulary filtering of a sentence corpus."""

from __future__ import annotations

import json

import pyarrow.parquet as pq
import pytest

from dimefm_pipeline.app.corpus import Vocabulary, filter_corpus, plural, write_prompts
from dimefm_pipeline.evaluation.classnames import load_classes, load_templates
from dimefm_pipeline.core.errors import DimefmError
from tests.conftest import run_cli


def test_prompts_from_shipped_sets_and_synonym_files(tmp_path):
    assert len(load_classes("imagenet")) == 1000 and load_classes("imagenet")[0] == ["tench"]
    openai = load_templates("openai")
    assert len(openai) == 80 and all("{c}" in t for t in openai)
    (tmp_path / "c.txt").write_text("# pets\ncat; kitten\nfire truck\n")
    n = write_prompts(load_classes(str(tmp_path / "c.txt")), ["a photo of a {c}.", "a {c}"], tmp_path / "p.jsonl")
    rows = [json.loads(line) for line in (tmp_path / "p.jsonl").read_text().splitlines()]
    assert n == 6 and [r["text"] for r in rows] == ["a photo of a cat.", "a cat", "a photo of a kitten.", "a kitten",
                                                    "a photo of a fire truck.", "a fire truck"]
    assert rows[2]["key"] == "0/1/0"
    with pytest.raises(DimefmError, match="already exists"):
        write_prompts([["x"]], ["{c}"], tmp_path / "p.jsonl")
    r = run_cli("corpus", "prompts", "--classes", "imagenet", "--templates", "simple", "--out", tmp_path / "in.txt")
    assert r.returncode == 0 and len((tmp_path / "in.txt").read_text().splitlines()) == 7000, r.stderr
    assert "itap of a tench." in (tmp_path / "in.txt").read_text()


def test_plurals():
    assert [plural((w,))[0] for w in ("cat", "box", "bus", "church", "puppy", "day", "knife", "sheep", "man", "leaf")] == [
        "cats", "boxes", "buses", "churches", "puppies", "days", "knives", "sheep", "men", "leaves"]
    assert plural(("fire", "truck")) == ("fire", "trucks")


def test_filter_keeps_whole_word_mentions_and_balances_concepts(tmp_path):
    (tmp_path / "v.txt").write_text("cat\nfire truck\ngoose\n")
    vocab = Vocabulary.from_classes(load_classes(str(tmp_path / "v.txt")))
    assert vocab.concepts("Two FIRE TRUCKS, three Geese and a cat.") == {0, 1, 2}
    assert vocab.concepts("the catalog of truck fires") == set()  # whole words, and the whole multi-word name
    lines = ["a cat.", "another cat", "cats again", "the catalog", "a fire truck", "geese and a cat", "nothing"]
    (tmp_path / "s.txt").write_text("\n".join(lines) + "\n")
    (tmp_path / "t.jsonl").write_text(json.dumps({"caption": "one more goose"}) + "\n")
    s = filter_corpus([str(tmp_path / "s.txt"), str(tmp_path / "t.jsonl")], vocab, tmp_path / "out.txt",
                      max_per_concept=2, progress=False)
    kept = (tmp_path / "out.txt").read_text().splitlines()
    # cat reaches its cap of 2 at "another cat"; "geese and a cat" is kept for goose; the jsonl's caption field is found
    assert kept == ["a cat.", "another cat", "a fire truck", "geese and a cat", "one more goose"]
    assert (s.read, s.kept) == (8, 5)
    counts = pq.read_table(tmp_path / "out.txt.counts.parquet").to_pylist()
    assert counts == [{"concept": "cat", "sentences": 4, "kept": 2}, {"concept": "fire truck", "sentences": 1, "kept": 1},
                      {"concept": "goose", "sentences": 2, "kept": 2}]
    r = run_cli("corpus", "filter", tmp_path / "s.txt", "--vocabulary", tmp_path / "v.txt", "--out", tmp_path / "cli.txt")
    assert r.returncode == 0 and len((tmp_path / "cli.txt").read_text().splitlines()) == 5, r.stderr


def test_a_colour_is_not_the_fruit_of_the_same_name():
    vocab = Vocabulary.from_classes(load_classes("imagenet"))
    orange = vocab.names.index("orange")
    for colour in ("an orange car parked on the street", "a man in an orange shirt", "Orange juice in a glass"):
        assert orange not in vocab.concepts(colour), colour
    for fruit in ("a bowl with an orange and two bananas", "she peeled the orange", "three oranges on a table",
                  "an orange, sliced in half", "an orange", "a photo of an orange by the window"):
        assert orange in vocab.concepts(fruit), fruit
