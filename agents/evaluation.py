"""Scores for long-form writing, as used by `manage.py evaluate` and bench/pipeline.py.

- Length score S_l (LongBench-Write): 100 when the word count equals the target, falling linearly
  to 0 at 4x too long or 3x too short.
- Heading soft recall (after STORM): for each reference heading, the best cosine similarity of
  its all-MiniLM-L6-v2 embedding to any generated heading, averaged over the reference headings.
- Repetition: the share of word 4-grams of the article that also occur in another section.
- Citation share: the share of sentences that carry a citation like [2] (when sources are given).
"""

from __future__ import annotations

import re
from collections import Counter


def length_score(words: int, target: int) -> float:
    if words <= 0 or target <= 0:
        return 0.0
    if words > target:
        return max(0.0, 100 * (1 - (words / target - 1) / 3))
    return max(0.0, 100 * (1 - (target / words - 1) / 2))


def heading_soft_recall(generated: list[str], reference: list[str], embed) -> float:
    """`embed(texts) -> [n, d]` normalised rows (agents.retrieval.Embedder.embed)."""
    if not generated or not reference:
        return 0.0
    similarity = embed(reference) @ embed(generated).T
    return float(similarity.max(dim=1).values.clamp(min=0).mean()) * 100


def _grams(text: str) -> list[tuple[str, ...]]:
    words = re.findall(r"[a-z0-9']+", text.lower())
    return [tuple(words[i:i + 4]) for i in range(len(words) - 3)]


def repetition(sections: list[str]) -> float:
    """Percent of 4-grams that appear in more than one section."""
    per_section = [set(_grams(text)) for text in sections]
    sections_with = Counter(g for grams in per_section for g in grams)
    total = sum(len(grams) for grams in per_section)
    repeated = sum(1 for grams in per_section for g in grams if sections_with[g] > 1)
    return 100 * repeated / total if total else 0.0


def citation_share(text: str) -> float:
    sentences = [s for s in re.split(r"(?<=[.!?])\s+", text) if s.strip()]
    cited = sum(1 for s in sentences if re.search(r"\[\d+\]", s))
    return 100 * cited / len(sentences) if sentences else 0.0
