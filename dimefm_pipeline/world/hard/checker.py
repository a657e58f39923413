"""Checking a sentence against a hard-world scene: does every claim hold?

The parser reads sentences with the vocabulary alone (never the grammar): object mentions with their
pattern, colour and shape, relations between consecutive mentions, and counts. A sentence passes when
its counts equal the scene's, some distinct objects fit its mentions with every stated relation
holding between them, and no visual word is left outside a claim.
"""

from __future__ import annotations

import itertools
import re
from dataclasses import dataclass

from dimefm_pipeline.world.checker import alternatives, phrase_lookup
from dimefm_pipeline.world.hard.scene import HardObject, HardScene, relation
from dimefm_pipeline.world.hard.vocab import (
    COLOUR_WORDS,
    COUNT_NOUNS,
    COUNT_WORDS,
    GENERIC_NOUNS,
    PATTERN_WORDS,
    RELATION_WORDS,
    SHAPE_WORDS,
    all_visual_words,
)


SHAPE_OF = phrase_lookup(SHAPE_WORDS) | {g: None for g in GENERIC_NOUNS}
COLOUR_OF = phrase_lookup(COLOUR_WORDS)
PATTERN_OF = phrase_lookup(PATTERN_WORDS)
COUNT_OF = phrase_lookup(COUNT_WORDS)
RELATION_OF = phrase_lookup(RELATION_WORDS)
NOUNS = set(COUNT_NOUNS) | {n[:-1] for n in COUNT_NOUNS}

MENTION = re.compile(rf"\b(?:a|an) (?:(?P<pattern>{alternatives(PATTERN_OF)}) )?(?:(?P<colour>{alternatives(COLOUR_OF)}) )?"
                     rf"(?P<noun>{alternatives(SHAPE_OF)})\b")
COUNT = re.compile(rf"(?:^|\b)(?P<count>{alternatives(COUNT_OF)}) (?:{alternatives(NOUNS)})\b")
RELATED = re.compile(rf"^(?:is )?(?P<rel>{alternatives(RELATION_OF)})$")
VISUAL = all_visual_words()


@dataclass(frozen=True)
class Mention:
    """What one object phrase claims; None where it is silent."""

    shape: str | None
    colour: str | None
    pattern: str | None

    def fits(self, obj: HardObject) -> bool:
        return all(claim is None or claim == getattr(obj, attr)
                   for attr, claim in (("shape", self.shape), ("colour", self.colour), ("pattern", self.pattern)))


@dataclass(frozen=True)
class HardCheck:
    """The verdict: `ok` when every claim holds; `problems` says what does not."""

    ok: bool
    problems: tuple[str, ...]
    mentions: tuple[Mention, ...]
    relations: tuple[tuple[int, int, str], ...]  # (mention, next mention, relation of the first to the second)
    counts: tuple[int, ...]


def parse(sentence: str) -> tuple[list[Mention], list[tuple[int, int, str]], list[int], str]:
    """Mentions, relations between consecutive mentions, counts, and the text no claim took."""
    text = sentence.lower().strip()
    counts = [COUNT_OF[m.group("count")] for m in COUNT.finditer(text)]
    text = COUNT.sub(" ", text)
    found = list(MENTION.finditer(text))
    mentions = [Mention(SHAPE_OF[m.group("noun")], COLOUR_OF.get(m.group("colour")), PATTERN_OF.get(m.group("pattern")))
                for m in found]
    relations, rest, last = [], [], 0
    for k, m in enumerate(found):
        gap = text[last:m.start()]
        rel = RELATED.match(gap.strip()) if k else None
        if rel:
            relations.append((k - 1, k, RELATION_OF[rel.group("rel")]))
        else:
            rest.append(gap)
        last = m.end()
    rest.append(text[last:])
    return mentions, relations, counts, " ".join(rest)


def _assignment_exists(scene: HardScene, mentions: list[Mention], relations: list[tuple[int, int, str]]) -> bool:
    for perm in itertools.permutations(range(scene.count), len(mentions)):
        objs = [scene.objects[i] for i in perm]
        if all(m.fits(o) for m, o in zip(mentions, objs)) and all(
                relation(objs[a], objs[b]) == rel for a, b, rel in relations):
            return True
    return False


def check_caption(sentence: str, scene: HardScene) -> HardCheck:
    """Verify every claim of `sentence` against `scene`."""
    mentions, relations, counts, rest = parse(sentence)
    problems = [f"claims {n} objects, scene has {scene.count}" for n in counts if n != scene.count]
    if len(mentions) > scene.count:
        problems.append(f"mentions {len(mentions)} objects, scene has {scene.count}")
    elif mentions and not _assignment_exists(scene, mentions, relations):
        problems.append("no distinct objects fit every mention and relation")
    stray = sorted(set(re.findall(r"[a-z]+", rest.replace("-", " "))) & VISUAL)
    if stray:
        problems.append(f"visual words outside any claim: {', '.join(stray)}")
    if not mentions and not counts:
        problems.append("no claim recognised")
    return HardCheck(not problems, tuple(problems), tuple(mentions), tuple(relations), tuple(counts))
