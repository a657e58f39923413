"""Checking a sentence against a scene: does every claim it makes hold?

The checker parses captions with the vocabulary alone (it never calls the grammar), so it can catch
a grammar that says something false: a wrong attribute, a wrong count, more objects than exist, or
a visual word the parser could not attach to any claim.
"""

from __future__ import annotations

import itertools
import re
from dataclasses import dataclass

from dimefm_pipeline.world.scene import Scene, WorldObject
from dimefm_pipeline.world.vocab import (
    COLOUR_WORDS,
    COUNT_WORDS,
    GENERIC_NOUNS,
    POSITION_WORDS,
    SHAPE_WORDS,
    SIZE_WORDS,
    all_visual_words,
)


def phrase_lookup(table: dict) -> dict[str, object]:
    """{phrase: value} from a table of {value: synonyms}."""
    return {phrase: value for value, phrases in table.items() for phrase in phrases}


SHAPE_OF = phrase_lookup(SHAPE_WORDS) | {g: None for g in GENERIC_NOUNS}
COLOUR_OF = phrase_lookup(COLOUR_WORDS)
SIZE_OF = phrase_lookup(SIZE_WORDS)
POSITION_OF = phrase_lookup(POSITION_WORDS)
COUNT_OF = phrase_lookup(COUNT_WORDS)


def alternatives(phrases) -> str:
    """A regex alternation of `phrases`, longest first so "top-left corner" wins over a shorter prefix."""
    return "|".join(re.escape(p) for p in sorted(phrases, key=len, reverse=True))


MENTION = re.compile(
    rf"\b(?:a|an) (?:(?P<size>{alternatives(SIZE_OF)}) )?(?:(?P<colour>{alternatives(COLOUR_OF)}) )?"
    rf"(?P<noun>{alternatives(SHAPE_OF)})\b(?: (?:in|at) the (?P<pos>{alternatives(POSITION_OF)})\b)?"
)
COUNT = re.compile(rf"(?:^|\b)(?P<count>{alternatives(COUNT_OF)}) (?:objects?|shapes?)\b")
VISUAL = all_visual_words()


@dataclass(frozen=True)
class Mention:
    """The attributes one object phrase claims; None where the phrase is silent."""

    shape: str | None
    colour: str | None
    size: str | None
    position: str | None

    def fits(self, obj: WorldObject) -> bool:
        return all(claim is None or claim == getattr(obj, attr)
                   for attr, claim in (("shape", self.shape), ("colour", self.colour),
                                       ("size", self.size), ("position", self.position)))


@dataclass(frozen=True)
class CaptionCheck:
    """The verdict: `ok` when every claim holds; `problems` says what does not."""

    ok: bool
    problems: tuple[str, ...]
    mentions: tuple[Mention, ...]
    counts: tuple[int, ...]


def parse(sentence: str) -> tuple[list[Mention], list[int], str]:
    """Object mentions and count claims in `sentence`, plus the text left once they are cut out."""
    text = sentence.lower().strip()
    counts = [COUNT_OF[m.group("count")] for m in COUNT.finditer(text)]
    text_wo_counts = COUNT.sub(" ", text)
    mentions = [
        Mention(SHAPE_OF[m.group("noun")], COLOUR_OF.get(m.group("colour")), SIZE_OF.get(m.group("size")),
                POSITION_OF.get(m.group("pos")))
        for m in MENTION.finditer(text_wo_counts)
    ]
    rest = MENTION.sub(" ", text_wo_counts)
    return mentions, counts, rest


def check_caption(sentence: str, scene: Scene) -> CaptionCheck:
    """Verify every claim of `sentence` against `scene`: counts, and a distinct matching object per mention."""
    mentions, counts, rest = parse(sentence)
    problems = []
    for n in counts:
        if n != scene.count:
            problems.append(f"claims {n} objects, scene has {scene.count}")
    if len(mentions) > scene.count:
        problems.append(f"mentions {len(mentions)} objects, scene has {scene.count}")
    elif mentions and not any(
        all(m.fits(scene.objects[i]) for m, i in zip(mentions, perm))
        for perm in itertools.permutations(range(scene.count), len(mentions))
    ):
        problems.append("no distinct object fits every mention")
    stray = sorted(set(re.findall(r"[a-z]+", rest.replace("-", " "))) & VISUAL)
    if stray:
        problems.append(f"visual words outside any claim: {', '.join(stray)}")
    if not mentions and not counts:
        problems.append("no claim recognised")
    return CaptionCheck(not problems, tuple(problems), tuple(mentions), tuple(counts))
