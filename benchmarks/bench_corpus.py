"""Which matcher for `dimefm corpus filter`: sentences per second on one core, for the same answers.

    .venv/bin/python benchmarks/bench_corpus.py --sentences 200000

Sentences are synthetic English-like lines of 12-30 words drawn from a 5,000-word vocabulary, a
third of them with one or two ImageNet class names (singular or plural) mixed in; the vocabulary is
open_clip's 1,000 ImageNet class names (2,000 forms with plurals, up to 5 words). Every matcher must
return the same concept sets as dimefm's (checked on every sentence):

- dimefm: words of the sentence looked up as n-grams (n <= the longest name) in a Python dict;
- pyahocorasick: an Aho-Corasick automaton over ` name ` on the space-joined words (whole words by
  the spaces), when the package is installed;
- regex: one compiled alternation of every form between word boundaries (Python `re`).
"""

from __future__ import annotations

import argparse
import os
import re
import time

import numpy as np
from rich.console import Console
from rich.table import Table


def sentences(n: int, vocab_names: list[str], seed: int = 0) -> list[str]:
    rng = np.random.default_rng(seed)
    syll = ["ka", "lo", "mi", "ra", "te", "su", "ne", "po", "vi", "da", "re", "to", "an", "el", "or"]
    words = ["".join(rng.choice(syll, rng.integers(1, 4))) for _ in range(5000)]
    out = []
    for _ in range(n):
        w = list(rng.choice(words, rng.integers(12, 31)))
        if rng.random() < 1 / 3:
            for _ in range(rng.integers(1, 3)):
                name = vocab_names[rng.integers(len(vocab_names))]
                w.insert(int(rng.integers(len(w))), name + ("s" if rng.random() < 0.3 else ""))
        out.append(" ".join(w).capitalize() + ".")
    return out


def main() -> None:
    from dimefm_pipeline.app.corpus import WORD, Vocabulary
    from dimefm_pipeline.evaluation.classnames import load_classes

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sentences", type=int, default=200_000)
    args = p.parse_args()
    classes = load_classes("imagenet")
    vocab = Vocabulary.from_classes(classes)
    data = sentences(args.sentences, [c[0].lower() for c in classes])
    results = {}

    def timed(name, fn):
        t0 = time.process_time()
        found = [fn(s) for s in data]
        results[name] = (time.process_time() - t0, found)

    timed("dimefm: word n-grams in a dict", vocab.concepts)
    truth = results["dimefm: word n-grams in a dict"][1]
    try:
        import ahocorasick

        auto = ahocorasick.Automaton()
        for words, c in vocab.phrases.items():
            auto.add_word(" " + " ".join(words) + " ", c)
        auto.make_automaton()
        timed("pyahocorasick automaton", lambda s: {c for _, c in auto.iter(" " + " ".join(WORD.findall(s.lower())) + " ")})
    except ImportError:
        pass
    forms = sorted((" ".join(w) for w in vocab.phrases), key=len, reverse=True)
    pattern = re.compile(r"\b(" + "|".join(re.escape(f) for f in forms) + r")\b")
    lookup = {" ".join(w): c for w, c in vocab.phrases.items()}
    timed("regex alternation (re)", lambda s: {lookup[m.group(1)] for m in pattern.finditer(" ".join(WORD.findall(s.lower())))})
    table = Table(title=f"Vocabulary matching on one core: {len(data):,} sentences, {len(vocab.phrases):,} name forms")
    for col in ("matcher", "CPU seconds", "sentences / s", "million / min", "same concepts as dimefm"):
        table.add_column(col, justify="left" if col == "matcher" else "right")
    for name, (sec, found) in results.items():
        same = sum(a == b for a, b in zip(found, truth)) / len(truth)
        table.add_row(name, f"{sec:.2f}", f"{len(data) / sec:,.0f}", f"{len(data) / sec * 60 / 1e6:.2f}", f"{same:.4f}")
    Console(width=150).print(table)
    print(f"load average {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs (CPU time, so other jobs inflate it little)")


if __name__ == "__main__":
    main()
