"""The promotion gate's measures: a candidate (a writer adapter, or a base model) writes the same
held-out briefs as the version it would replace, greedy (sampled candidates from the same seeds),
once with the writers' filter off (the model's own defect rates) and once on (what readers get),
and the two are compared. webapp/jobs/gate.py runs it for a registered version and stores
the comparison with it; activating a version that did not pass needs a recorded override.

The rule (`verdict`): with the filter off, the candidate's summed defects are at most the active
version's (plus 0.5 points: greedy text of equal models differs by a sentence or two); with the
filter on, at most the active version's plus 0.5 points; and its length score S_l at most
5 points below the active version's, filter on. A tie passes: a candidate must not be worse."""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass

from agents import coordinator, evaluation, quality
from agents.llm.types import AdapterSpec, Engine
from agents.outline import Brief

DEFECT_SLACK = 0.5  # points of summed defects a candidate may be above the active version
LENGTH_SLACK = 5.0  # points of S_l it may be below
ARMS: tuple[tuple[str, Collection[str]], ...] = (("off", frozenset()), ("on", quality.KINDS))  # filter off, then on
DEFECT_KEYS = ("meta", "junk", "repeated_4grams", "off_brief")


def summed_defects(scores: dict, sections: list[tuple[str, str]]) -> float:
    """What a reader would not keep, summed: echo sentences (as % of sentences), meta %, junk
    words %, repeated 4-grams %, off-brief %. About zero for the filtered team; with the writers'
    filter off, the model's own defect rate."""
    count = max(1, sum(len(quality.sentences(text)) for _, text in sections))
    return 100 * (scores.get("echo") or 0) / count + sum(scores.get(key) or 0 for key in DEFECT_KEYS)


def brief_of(item: dict, max_words: int = 0) -> Brief:
    """A brief from a briefs-file entry; `max_words` caps its length (the gate compares two
    versions on the same briefs, so shorter ones measure the same difference sooner)."""
    words = int(item.get("words", 1500))
    return Brief(topic=item["topic"], target_words=min(words, max_words) if max_words else words,
                 audience=item.get("audience", ""), notes=item.get("notes", ""))


@dataclass(frozen=True)
class Arm:
    """One version as the gate writes with it: an engine (the base model) and a writer adapter."""
    label: str
    engine: Engine
    adapter: AdapterSpec | None = None


def measure(arm: Arm, briefs: list[Brief], embed, lexicon: quality.Lexicon | None) -> dict:
    """The version's means over the briefs, with the filter off and on: summed defects, S_l and
    words; and each brief's figures."""
    result: dict = {"version": arm.label}
    for name, filters in ARMS:
        rows = []
        for brief in briefs:
            article = coordinator.write_article(arm.engine, brief, review_article=False, writer_adapter=arm.adapter,
                                                filters=filters)
            scores = evaluation.reader_scores(brief, article.sections, article.headings, embed, lexicon)
            words = len(article.lead.split()) + sum(len(text.split()) for _, text in article.sections)
            rows.append({"topic": brief.topic[:60], "words": words,
                         "S_l": round(evaluation.length_score(words, brief.target_words), 2),
                         "defects": round(summed_defects(scores, article.sections), 3)})
        result[name] = {"defects": _mean(r["defects"] for r in rows), "S_l": _mean(r["S_l"] for r in rows),
                        "words": _mean(r["words"] for r in rows), "briefs": rows}
    return result


def verdict(candidate: dict, active: dict) -> tuple[bool, list[str]]:
    """Whether the candidate passes against the active version, and, where it does not, why."""
    reasons = []
    for arm, what in (("off", "its own text (filter off)"), ("on", "what readers get (filter on)")):
        mine, theirs = candidate[arm]["defects"], active[arm]["defects"]
        if mine > theirs + DEFECT_SLACK:
            reasons.append(f"summed defects of {what}: {mine:.1f}% against {theirs:.1f}%")
    mine, theirs = candidate["on"]["S_l"], active["on"]["S_l"]
    if mine < theirs - LENGTH_SLACK:
        reasons.append(f"length score S_l: {mine:.1f} against {theirs:.1f}")
    return not reasons, reasons


def _mean(values) -> float:
    values = list(values)
    return round(sum(values) / len(values), 3) if values else 0.0
