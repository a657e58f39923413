"""`dimefm corpus prompts|filter`: build the sentence corpus for the tasks a user cares about."""

from __future__ import annotations

from typing import List, Optional

import typer

from dimefm_pipeline.cli import app
from dimefm_pipeline.formats.base import TEXT_FIELDS

corpus_app = typer.Typer(help="Sentence corpora: class-name prompts, or a large corpus filtered by a vocabulary.",
                         no_args_is_help=True)
app.add_typer(corpus_app, name="corpus")

ClassesHelp = ("A text file (one class per line; synonyms separated by ';'), a folder suite (DIR/classnames.txt), "
               "or imagenet (open_clip's 1,000 class names).")


@corpus_app.command("prompts")
def prompts(
    classes: str = typer.Option(..., "--classes", help=ClassesHelp),
    templates: str = typer.Option("openai", "--templates", help="A file (one template per line, {c} where the name "
                                  "goes), or openai (open_clip's 80 ImageNet templates) or simple."),
    out: str = typer.Option(..., "--out", help="Sentence file to write: .txt (one per line) or .jsonl (key, text)."),
):
    """Class names x prompt templates, as a sentence file for `dimefm encode texts`."""
    from dimefm_pipeline.app.corpus import write_prompts
    from dimefm_pipeline.evaluation.classnames import load_classes, load_templates
    from dimefm_pipeline.core.progress import make_console

    c, t = load_classes(classes), load_templates(templates)
    n = write_prompts(c, t, out)
    names = sum(len(x) for x in c)
    make_console().print(f"wrote {n:,} sentences to {out}: {len(c):,} classes ({names:,} names) x {len(t)} templates")


@corpus_app.command("filter")
def filter_cmd(
    sources: List[str] = typer.Argument(..., help="Sentence files: .txt, .jsonl, .parquet, .tsv (braces and globs ok)."),
    vocabulary: str = typer.Option(..., "--vocabulary", help=ClassesHelp),
    out: str = typer.Option(..., "--out", help="Sentence file to write (.txt); per-concept counts go to OUT.counts.parquet."),
    max_per_concept: Optional[int] = typer.Option(None, "--max-per-concept", min=1, help="Stop keeping sentences for a "
                                                  "concept once it has this many (balances frequent concepts)."),
    text_field: Optional[str] = typer.Option(None, help=f"JSONL field holding the sentence (default: the first of "
                                             f"{', '.join(TEXT_FIELDS)} that the first record has)."),
    text_column: Optional[str] = typer.Option(None, help=f"Parquet column holding the sentence (default: the first of "
                                              f"{', '.join(TEXT_FIELDS)} that the file has)."),
    top: int = typer.Option(15, "--top", help="Concepts shown in the table."),
):
    """Keep the sentences that mention at least one concept (whole words, any case, plurals, multi-word names)."""
    from rich.table import Table

    from dimefm_pipeline.app.corpus import Vocabulary, filter_corpus
    from dimefm_pipeline.evaluation.classnames import load_classes
    from dimefm_pipeline.core.progress import make_console

    vocab = Vocabulary.from_classes(load_classes(vocabulary))
    opts = {k: v for k, v in {"text_field": text_field, "text_column": text_column}.items() if v is not None}
    s = filter_corpus(sources, vocab, out, max_per_concept=max_per_concept, options=opts)
    console = make_console()
    t = Table(title=f"concepts in {s.read:,} sentences (most mentioned)")
    for col in ("concept", "sentences", "kept"):
        t.add_column(col, justify="left" if col == "concept" else "right")
    for name, n, k in [c for c in sorted(s.counts, key=lambda c: -c[1]) if c[1]][:top]:
        t.add_row(name, f"{n:,}", f"{k:,}")
    console.print(t)
    missing = sum(1 for _, n, _ in s.counts if n == 0)
    console.print(f"kept {s.kept:,} of {s.read:,} sentences ({s.read / max(s.seconds, 1e-9):,.0f} sentences/s) -> {out}; "
                  f"{missing:,} of {len(s.counts):,} concepts never mentioned; counts in {out}.counts.parquet")
