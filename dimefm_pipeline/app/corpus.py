"""Sentence corpora for the tasks a user cares about (`dimefm corpus prompts|filter`).

The sentence side decides what a student can name. Two ways to build it, both writing files that
`dimefm encode texts` reads:

- prompts: class names x prompt templates. Class names come from a text file (one class per line,
  synonyms separated by `;`, each giving its own prompts), a folder suite (`DIR/classnames.txt`), or
  a set a well-kept library ships (`imagenet`: open_clip's 1,000 ImageNet class names); templates
  from a file (one per line, `{c}` where the name goes) or open_clip's sets (`openai`: the 80 OpenAI
  ImageNet templates, `simple`).
- filter: stream any number of sentences and keep those that mention at least one concept of a
  vocabulary (the same class-name formats): whole words, case-folded, plural forms, multi-word names.
  Words are looked up as n-grams in a dictionary (chosen by measurement: docs/benchmarks.md).
"""

from __future__ import annotations

import json
import re
import time
from dataclasses import dataclass, field
from pathlib import Path

from dimefm_pipeline.core.errors import DimefmError

WORD = re.compile(r"[a-z0-9]+(?:['’-][a-z0-9]+)*")
CLAUSE_END = re.compile(r"[,.;:!?()\[\]\"]")
IRREGULAR = {"man": "men", "woman": "women", "child": "children", "person": "people", "mouse": "mice", "goose": "geese",
             "foot": "feet", "tooth": "teeth", "ox": "oxen", "louse": "lice", "die": "dice", "leaf": "leaves",
             "knife": "knives", "wife": "wives", "wolf": "wolves", "life": "lives", "loaf": "loaves", "calf": "calves",
             "half": "halves", "shelf": "shelves", "thief": "thieves", "cactus": "cacti", "fungus": "fungi"}
# Colour words that are also one-word class names (ImageNet's orange, lemon...): "an orange car" names a
# colour. Such a name counts as the class when no word follows it or a function word does ("an orange
# and a pear", "peeled the orange"); its plural always does.
COLOUR_WORDS = {"orange", "lemon", "lime", "olive", "peach", "plum", "cherry", "chestnut", "coral", "ivory", "cream",
                "chocolate", "wine", "gold", "silver", "rust", "mustard", "salmon", "navy", "jade", "amber"}
FUNCTION_WORDS = {"and", "or", "but", "with", "without", "on", "in", "at", "of", "to", "from", "by", "for", "near",
                  "next", "under", "over", "beside", "behind", "is", "are", "was", "were", "has", "have", "had", "that",
                  "which", "who", "it", "its", "a", "an", "the", "this", "these", "those", "than", "as", "while", "so",
                  "about", "above", "across", "after", "against", "along", "among", "around", "before", "below",
                  "beneath", "between", "beyond", "during", "inside", "into", "like", "onto", "outside", "through",
                  "toward", "towards", "upon", "within", "sits", "lies", "being"}
SAME_PLURAL = {"sheep", "fish", "deer", "moose", "bison", "series", "species", "aircraft", "salmon", "trout", "swine"}


def write_prompts(classes: list[list[str]], templates: list[str], out: str | Path) -> int:
    """Every name of every class in every template, one sentence per line (.txt) or a JSONL with keys
    `class/name/template`; returns the number of sentences. An existing file is not overwritten."""
    out = Path(out)
    if out.suffix not in (".txt", ".jsonl"):
        raise DimefmError(f"--out must end in .txt or .jsonl, not {out.name}")
    if out.exists():
        raise DimefmError(f"{out} already exists: name a new --out, or remove it")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    n = 0
    with open(tmp, "w", encoding="utf-8") as f:
        for c, names in enumerate(classes):
            for j, name in enumerate(names):
                for t, template in enumerate(templates):
                    text = template.replace("{c}", name)
                    f.write(text + "\n" if out.suffix == ".txt" else json.dumps({"key": f"{c}/{j}/{t}", "text": text}) + "\n")
                    n += 1
    tmp.replace(out)
    return n


def plural(words: tuple[str, ...]) -> tuple[str, ...]:
    """The plural of a name (its last word), by English rules and a list of irregular nouns."""
    last = words[-1]
    if last in SAME_PLURAL or not last.isalpha():
        return words
    if last in IRREGULAR:
        p = IRREGULAR[last]
    elif last.endswith(("s", "x", "z", "ch", "sh")):
        p = last + "es"
    elif last.endswith("y") and len(last) > 1 and last[-2] not in "aeiou":
        p = last[:-1] + "ies"
    else:
        p = last + "s"
    return words[:-1] + (p,)


@dataclass
class Vocabulary:
    """Concepts as word n-grams (singular and plural of every name) -> concept number."""

    names: list[str]  # display name of each concept (its first name)
    phrases: dict[tuple[str, ...], int] = field(default_factory=dict)
    longest: int = 1

    @classmethod
    def from_classes(cls, classes: list[list[str]]) -> "Vocabulary":
        v = cls([names[0] for names in classes])
        for c, names in enumerate(classes):
            for name in names:
                words = tuple(WORD.findall(name.lower()))
                for form in {words, plural(words)} if words else ():
                    v.phrases.setdefault(form, c)
                    v.longest = max(v.longest, len(form))
        return v

    def concepts(self, sentence: str) -> set[int]:
        """Concepts a sentence mentions as whole words (case-folded), a name never spanning punctuation."""
        found = set()
        get = self.phrases.get
        for clause in CLAUSE_END.split(sentence.lower()):
            words = WORD.findall(clause)
            for i in range(len(words)):
                for n in range(1, min(self.longest, len(words) - i) + 1):
                    c = get(tuple(words[i : i + n]))
                    if c is not None and not (n == 1 and _colour_adjective(words, i)):
                        found.add(c)
        return found


def _colour_adjective(words: list[str], i: int) -> bool:
    """Word i is a colour word used as one ("orange" in "an orange car")."""
    return words[i] in COLOUR_WORDS and i + 1 < len(words) and words[i + 1] not in FUNCTION_WORDS


def iter_sentences(sources: list[str], options: dict | None = None):
    """Every valid sentence of the sources, in order, streamed (any sentence format)."""
    import os

    from dimefm_pipeline.formats import format_named, resolve_sources

    for spec in resolve_sources(sources, "text", options):
        fmt = format_named(spec.fmt)
        for rel in spec.files:
            for _, _, records in fmt.scan_texts(os.path.join(spec.root, rel), spec.options):
                for _, text, _ in records:
                    if text is not None:
                        yield text


@dataclass
class FilterSummary:
    read: int
    kept: int
    seconds: float
    counts: list[tuple[str, int, int]]  # (concept, sentences mentioning it, sentences kept for it)


def filter_corpus(sources: list[str], vocab: Vocabulary, out: str | Path, *, max_per_concept: int | None = None,
                  options: dict | None = None, progress: bool = True) -> FilterSummary:
    """Keep the sentences that mention a concept of `vocab`; with `max_per_concept`, a sentence is kept
    only while one of its concepts has fewer kept sentences than that (frequent concepts stop taking
    sentences, rare ones keep getting theirs). Writes `out` (.txt) and `out` + `.counts.parquet`."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from dimefm_pipeline.core.progress import progress_bar

    out = Path(out)
    if out.suffix != ".txt":
        raise DimefmError(f"--out must end in .txt, not {out.name}")
    if out.exists():
        raise DimefmError(f"{out} already exists: name a new --out, or remove it")
    out.parent.mkdir(parents=True, exist_ok=True)
    mentioned = [0] * len(vocab.names)
    kept_for = [0] * len(vocab.names)
    read = kept = 0
    t0 = time.time()
    tmp = out.with_name(out.name + ".tmp")
    with open(tmp, "w", encoding="utf-8") as f, progress_bar(progress) as bar:
        task = bar.add_task("filter sentences", total=None, items=0, rate=0.0)
        for text in iter_sentences(sources, options):
            read += 1
            found = vocab.concepts(text)
            if found:
                for c in found:
                    mentioned[c] += 1
                wanted = [c for c in found if max_per_concept is None or kept_for[c] < max_per_concept]
                if wanted:
                    for c in wanted:
                        kept_for[c] += 1
                    f.write(text + "\n")
                    kept += 1
            if read % 65536 == 0:
                bar.update(task, completed=read, items=kept, rate=read / max(time.time() - t0, 1e-9))
        bar.update(task, completed=read, items=kept, rate=read / max(time.time() - t0, 1e-9))
    tmp.replace(out)
    counts = list(zip(vocab.names, mentioned, kept_for))
    pq.write_table(pa.table({"concept": [c[0] for c in counts], "sentences": [c[1] for c in counts],
                             "kept": [c[2] for c in counts]}), out.with_name(out.name + ".counts.parquet"))
    return FilterSummary(read, kept, time.time() - t0, counts)
