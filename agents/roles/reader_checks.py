"""The reviewer's checks that read as a reader does, with models that are not the LLM: the
chatter classifier (talk about the writing, by meaning), a lexicon (words nobody knows), sentence
embeddings (sentences that stray from the brief and their section). Each finds sentences and
proposes removing them; people decide. Where a judge is missing (no embedding model installed),
its check is skipped.

These are the detectors `manage.py evaluate` counts defects with (evaluation.reader_defects), so
the reviewer's recall against them measures what reaches people, not agreement with a person:
bench/reviewer_recall.py measures that against sentences a person marked."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

from agents import quality

FOREIGN_SHARE = 0.4  # a sentence with this share of words no English lexicon knows is another language's


@dataclass
class Judges:
    """What the checks read with; None skips the check that needs it."""

    chatter: Callable[[list[str]], list[float]] | None = None  # P(talk about the writing) per sentence
    chatter_threshold: float = 0.5
    lexicon: quality.Lexicon | None = None
    embed: Callable | None = None

    @classmethod
    def default(cls) -> Judges:
        """The installed classifier, lexicon and embedder; a check whose model is missing is skipped."""
        from agents import chatter
        from agents.llm.files import ModelFolderError
        from agents.retrieval import default_embedder

        try:
            classifier = chatter.default_chatter()
            return cls(chatter=lambda found: classifier.probability(found).tolist(),
                       chatter_threshold=chatter.THRESHOLD, lexicon=quality.default_lexicon(),
                       embed=default_embedder().embed)
        except (ModelFolderError, OSError):
            return cls()


# After an end mark (and a closing quote or bracket, which stay with their sentence), or between
# paragraphs: '"It is." This one.' is two sentences, as quality.sentences reads it.
SENTENCE_BREAK = re.compile(r"(?<=[.!?])\s+|(?<=[.!?][\"'”’)\]])\s+|\n\s*\n")


def sentences(text: str) -> list[str]:
    """The sentences of `text`, each an exact span of it (what a proposal may name)."""
    return [s.strip() for s in SENTENCE_BREAK.split(text) if s.strip()]


def unknown_words(sentence: str, lexicon: quality.Lexicon, allowed: frozenset[str]) -> list[str]:
    """Words no lexicon knows and the brief and sources do not use, capitalised ones judged as
    words too ("Sler"); every word of a sentence mostly made of them (another language, nonsense)."""
    found = quality.WORD.findall(sentence)
    unknown = [w for w in found if w.lower() not in allowed and not lexicon.knows(w.lower())]
    return found if len(found) >= 4 and len(unknown) >= FOREIGN_SHARE * len(found) else unknown


def chatter_sentences(sections: list[tuple[str, str, str]], judges: Judges) -> list[tuple[str, str]]:
    """(key, sentence) of the sentences the classifier finds talking about the writing."""
    found = [(key, s) for key, _, text in sections for s in sentences(text) if quality.has_words(s)]
    if judges.chatter is None or not found:
        return []
    scores = judges.chatter([quality.normalise(s) for _, s in found])
    return [pair for pair, p in zip(found, scores, strict=True) if p >= judges.chatter_threshold]


def junk_sentences(sections: list[tuple[str, str, str]], judges: Judges,
                   allowed: frozenset[str]) -> list[tuple[str, str, list[str]]]:
    """(key, sentence, its unknown words)."""
    if judges.lexicon is None:
        return []
    out = []
    for key, _, text in sections:
        for sentence in sentences(text):
            unknown = unknown_words(quality.normalise(sentence), judges.lexicon, allowed)
            if unknown:
                out.append((key, sentence, unknown))
    return out


def off_brief_sentences(sections: list[tuple[str, str, str]], judges: Judges, about: str) -> list[tuple[str, str]]:
    """(key, sentence) of sentences near neither the brief nor their own section's heading."""
    if judges.embed is None:
        return []
    out = []
    for key, heading, text in sections:
        on_brief = quality.OnBrief([about, heading], judges.embed)
        out += [(key, s) for s in sentences(text) if not on_brief(s)]
    return out
