"""The reviewer: reads the whole article and proposes fixes as suggestions, never edits.

This first reviewer finds repetition across sections without a model: a sentence whose word
4-grams mostly appear in an earlier section is proposed for removal, with the earlier sentence
named as the reason. (Consistency checks and transitions written by the model are still to come.)"""

from __future__ import annotations

import re
from dataclasses import dataclass

ROLE = "reviewer"
OVERLAP = 0.6  # share of a sentence's 4-grams found earlier that counts as a repetition


@dataclass
class Proposal:
    section_key: str
    original: str  # an exact span of the section's text
    replacement: str
    reason: str
    kind: str = "repetition"


def _sentences(text: str) -> list[str]:
    return [s.strip() for s in re.split(r"(?<=[.!?])\s+", text) if s.strip()]


def _grams(sentence: str) -> set[tuple[str, ...]]:
    words = re.findall(r"[a-z0-9']+", sentence.lower())
    return {tuple(words[i:i + 4]) for i in range(len(words) - 3)}


def review_repetition(sections: list[tuple[str, str, str]]) -> list[Proposal]:
    """sections: (key, heading, text) in reading order."""
    earlier: dict[tuple[str, ...], tuple[str, str]] = {}  # 4-gram -> (heading, sentence)
    proposals = []
    for key, heading, text in sections:
        seen_here: dict[tuple[str, ...], tuple[str, str]] = {}
        for sentence in _sentences(text):
            grams = _grams(sentence)
            if len(grams) >= 3:
                hits = [earlier[g] for g in grams if g in earlier]
                if len(hits) >= OVERLAP * len(grams):
                    where, first = max(set(hits), key=hits.count)
                    proposals.append(Proposal(key, sentence, "", f"Repeats “{first[:120]}” from “{where}”."))
                    continue
            for gram in grams:
                seen_here.setdefault(gram, (heading, sentence))
        for gram, value in seen_here.items():
            earlier.setdefault(gram, value)
    return proposals
