"""Non-visual sentences, standing in for the bulk of a raw NLP corpus.

They share no word with the world's visual vocabulary, so a distilled student has to learn that
most of its sentences do not describe any image, as with the paper's filtered RoBERTa corpus.
"""

from __future__ import annotations

import numpy as np

SUBJECTS = ("the committee", "my neighbour", "the government", "a local farmer", "the orchestra", "our manager",
            "the senator", "a group of students", "the company", "the museum", "her grandfather", "the council",
            "the team", "a famous author", "the hospital", "the airline")
VERBS = ("approved", "discussed", "postponed", "announced", "criticised", "celebrated", "reviewed", "rejected",
         "published", "questioned", "funded", "delayed", "praised", "cancelled", "defended", "explained")
THINGS = ("the new budget", "the annual report", "a trade agreement", "the proposal", "the tax reform",
          "a research grant", "the election results", "the festival schedule", "the pension plan",
          "a peace treaty", "the school curriculum", "the merger", "the court ruling", "a new novel",
          "the weather forecast", "the railway timetable")
TAILS = ("on tuesday", "last year", "after a long debate", "despite the protests", "during the meeting",
         "for the third time", "without further comment", "according to the press", "earlier this month",
         "before the holidays", "with great enthusiasm", "in a short statement")
TOPICS = ("inflation", "philosophy", "medieval history", "tax law", "music theory", "economics", "poetry",
          "public health", "linguistics", "climate policy", "chess", "jazz")
ADJECTIVES = ("important", "debated", "misunderstood", "popular", "difficult", "fascinating", "neglected")
FIELDS = ("modern research", "the news", "schools", "politics", "everyday life", "universities")

TEMPLATES = (
    lambda p: f"{p(SUBJECTS)} {p(VERBS)} {p(THINGS)} {p(TAILS)}.",
    lambda p: f"{p(SUBJECTS)} {p(VERBS)} {p(THINGS)}.",
    lambda p: f"{p(TOPICS)} is one of the most {p(ADJECTIVES)} subjects in {p(FIELDS)}.",
    lambda p: f"many people think that {p(TOPICS)} is {p(ADJECTIVES)}.",
    lambda p: f"{p(TAILS)}, {p(SUBJECTS)} {p(VERBS)} {p(THINGS)}.",
    lambda p: f"why {p(SUBJECTS)} {p(VERBS)} {p(THINGS)} remains unclear.",
)


def distractor_sentence(rng: np.random.Generator) -> str:
    """One grammatical sentence about nothing visible."""

    def pick(options):
        return options[int(rng.integers(len(options)))]

    return pick(TEMPLATES)(pick)
