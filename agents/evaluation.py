"""Scores for long-form writing, as used by `manage.py evaluate` and bench/pipeline.py.

- Length score S_l (LongBench-Write): 100 when the word count equals the target, falling linearly
  to 0 at 4x too long or 3x too short.
- Heading soft recall (after STORM): for each reference heading, the best cosine similarity of
  its all-MiniLM-L6-v2 embedding to any generated heading, averaged over the reference headings.
- Repetition: the share of word 4-grams of the article that also occur in another section.
- Citation share: the share of sentences that carry a citation like [2] (when sources are given).
- What a reader sees (`reader_scores`): prompt echoes, meta sentences and junk words (the
  definitions of agents/quality.py), off-brief sentences, subtopic coverage, duplicate headings
  and citation support (agents/citations.py).
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable

from agents import quality
from agents.outline import Brief


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


def repetition(sections: list[str]) -> float:
    """Percent of 4-grams that appear in more than one section."""
    per_section = [set(quality.four_grams(text)) for text in sections]
    sections_with = Counter(g for grams in per_section for g in grams)
    total = sum(len(grams) for grams in per_section)
    repeated = sum(1 for grams in per_section for g in grams if sections_with[g] > 1)
    return 100 * repeated / total if total else 0.0


def citation_share(text: str) -> float:
    sentences = [s for s in re.split(r"(?<=[.!?])\s+", text) if s.strip()]
    cited = sum(1 for s in sentences if re.search(r"\[\d+\]", s))
    return 100 * cited / len(sentences) if sentences else 0.0


# --- what a reader sees (issue 15) ------------------------------------------------------------

OFF_BRIEF = quality.OFF_BRIEF  # cosine of a sentence to the brief below which it is off it (bench/calibrate.py)


def reader_scores(brief: Brief, sections: list[tuple[str, str]], headings: list[str], embed,
                  lexicon: quality.Lexicon | None, passages: dict[int, list[str]] | None = None,
                  sources_text: str = "", aspects: list[str] | None = None) -> dict[str, float | None]:
    """Per article, in percent unless named a count: prompt-echo sentences (count), meta
    sentences, junk words, repeated 4-grams across sections, off-brief sentences, the brief's
    subtopics covered by a heading (None without subtopics), duplicate heading pairs (count),
    and with `passages` (section index -> the passages its writer was given, numbered from 1)
    cited sentences and citations that clear the support threshold."""
    from agents.citations import MARK, Support
    from agents.roles import chief_editor, section_writer

    all_headings = headings + [h for h, _ in sections]
    told = section_writer.writer_instructions(brief, all_headings)
    per_section = [quality.sentences(text) for _, text in sections]
    said = [s for found in per_section for s in found]
    count = max(1, len(said))
    allowed = quality.allowed_words(brief.topic, brief.notes, brief.audience, sources_text, *all_headings)
    words = [w for _, text in sections for w in quality.WORD.findall(text)]
    junk = [w for _, text in sections for w in (lexicon.junk(text, allowed) if lexicon else [])]
    about = f"{brief.topic}. {brief.notes}".strip(". ")
    off = 0
    for (heading, _), found in zip(sections, per_section, strict=True):
        on_brief = quality.OnBrief([about, heading], embed)
        off += sum(not on_brief(sentence) for sentence in found)
    topics = chief_editor.subtopics(brief)
    covered = chief_editor.covered(topics, headings, embed)
    scores: dict[str, float | None] = {
        "echo": float(sum(told.echoed(s) for s in said)),
        "meta": 100 * sum(quality.is_meta(s) for s in said) / count,
        "junk": 100 * len(junk) / max(1, len(words)),
        "repeated_4grams": repetition([text for _, text in sections]),
        "off_brief": 100 * off / count,
        "subtopics_covered": 100 * sum(covered) / len(covered) if covered else None,
        "duplicate_headings": float(len(chief_editor.duplicate_pairs(headings, embed))),
        "cited": None, "supported": None,
    }
    scores |= independent_scores(brief, sections, headings, embed, lexicon, passages, sources_text, aspects)
    if passages is not None and any(passages.values()):
        cited = supported = marks = 0
        with_sources = 0
        for index, found in enumerate(per_section):
            given = passages.get(index) or []
            if not given:
                continue
            support = Support(given, embed)
            for sentence in found:
                with_sources += 1
                numbers = [int(n) for n in MARK.findall(sentence)]
                if numbers:
                    cited += 1
                    scores_here = support.scores(sentence)
                    marks += len(numbers)
                    supported += sum(scores_here.get(n, 0.0) >= support.threshold for n in numbers)
        scores["cited"] = 100 * cited / max(1, with_sources)
        scores["supported"] = 100 * supported / marks if marks else None
    return scores


# --- briefs nobody tuned for (issue 23) --------------------------------------------------------

HALVES_SEED = 2323  # fixed once: which of training/data/briefs_unseen.json is tuned on, which judged


def halves(items: list[dict], seed: int = HALVES_SEED) -> dict[str, list[int]]:
    """The briefs' indices split into a development half (tune on it) and a test half (judge on
    it, never tune for it), within each domain so both halves cover every domain. Fixed by `seed`:
    the same file always splits the same way."""
    import random

    by_domain: dict[str, list[int]] = {}
    for index, item in enumerate(items):
        by_domain.setdefault(str(item.get("domain", "")), []).append(index)
    split: dict[str, list[int]] = {"dev": [], "test": []}
    rng = random.Random(seed)
    for domain in sorted(by_domain):
        members = sorted(by_domain[domain])
        rng.shuffle(members)
        cut = len(members) // 2 + (len(members) % 2 if len(split["dev"]) <= len(split["test"]) else 0)
        split["dev"] += members[:cut]
        split["test"] += members[cut:]
    return {name: sorted(found) for name, found in split.items()}


# --- measures that share no blind spot with the writers' filter (issue 23) ----------------------

LOOP_OVERLAP = 0.6  # a sentence sharing this share of its 4-grams with one before it in its section says it again


def independent_scores(brief: Brief, sections: list[tuple[str, str]], headings: list[str], embed,
                       lexicon: quality.Lexicon | None, passages: dict[int, list[str]] | None = None,
                       sources_text: str = "", aspects: list[str] | None = None) -> dict[str, float | None]:
    """Per article, on text with quotes and apostrophes normalised first: meta sentences as the
    embedding classifier finds them (%), junk words counting capitalised non-words and runs of
    another language (%), sentences repeated within their own section (count), headings that are
    headings (%), sentences with a date, number or name no source supports (%), and the brief's
    named aspects that have a heading (%, when given)."""
    from agents import headings as heading_rules

    per_section = [quality.sentences(quality.normalise(text)) for _, text in sections]
    said = [s for found in per_section for s in found]
    count = max(1, len(said))
    allowed = quality.allowed_words(brief.topic, brief.notes, brief.audience, sources_text, *headings,
                                    *[h for h, _ in sections])
    known = measured_known(brief, sources_text, headings)
    all_headings = list(dict.fromkeys(headings + [h for h, _ in sections if h]))
    meta = _classified_meta(said)
    return {
        "meta_classifier": None if meta is None else 100 * meta / count,
        "junk_strict": _strict_junk(said, lexicon, allowed) if lexicon is not None else None,
        "loops": float(sum(_repeated_in_section(found) for found in per_section)),
        "heading_quality": heading_rules.quality(all_headings),
        "unsupported_claims": 100 * _unsupported_claims(per_section, known, passages or {}, embed) / count,
        "aspects_covered": _aspects_covered(aspects, all_headings, embed) if aspects else None,
    }


def measured_known(brief: Brief, sources_text: str, headings: list[str]) -> str:
    """What the measures take a claim to be supported by: the brief, the sources, the headings."""
    return " ".join([brief.topic, brief.notes, sources_text, *headings])


def _classified_meta(said: list[str]) -> float | None:
    """How many sentences the chatter classifier counts as meta (None without the embedding model)."""
    from agents import chatter
    from agents.llm.files import ModelFolderError

    try:
        classifier = chatter.default_chatter()
    except ModelFolderError:
        return None
    judged = [sentence for sentence in said if quality.has_words(sentence)]  # not a list item's "1."
    return float((classifier.probability(judged) >= chatter.THRESHOLD).sum()) if judged else 0.0


def _strict_junk(said: list[str], lexicon: quality.Lexicon, allowed: frozenset[str]) -> float:
    """Percent of words no lexicon knows, capitalised ones judged as words too ("Sler"), and every
    word of a sentence that is mostly unknown words (a run of another language, or nonsense)."""
    from agents.roles.reader_checks import unknown_words

    words = sum(len(quality.WORD.findall(sentence)) for sentence in said)
    junk = sum(len(unknown_words(sentence, lexicon, allowed)) for sentence in said)
    return 100 * junk / max(1, words)


def _repeated_in_section(found: list[str]) -> int:
    """Sentences that share most of their 4-grams with one before them in the same section."""
    repeated, seen = 0, list[set[tuple[str, ...]]]()
    for sentence in found:
        grams = set(quality.four_grams(sentence))
        repeated += bool(grams) and any(len(grams & other) >= LOOP_OVERLAP * len(grams) for other in seen)
        seen.append(grams)
    return repeated


def _unsupported_claims(per_section: list[list[str]], known: str, passages: dict[int, list[str]], embed) -> int:
    """Sentences stating a date, number or name that neither the brief and sources hold nor one
    of the section's passages supports."""
    from agents import claims
    from agents.citations import Support

    unsupported = 0
    for index, found in enumerate(per_section):
        supports = _supports(Support(passages[index], embed)) if passages.get(index) else None
        unsupported += sum(bool(claims.unsupported(sentence, known, supports)) for sentence in found)
    return unsupported


def _aspects_covered(aspects: list[str], headings: list[str], embed) -> float:
    from agents.roles import chief_editor

    covered = chief_editor.covered(list(aspects), headings, embed)
    return 100 * sum(covered) / len(covered)


# --- what the reviewer finds of what readers find -----------------------------------------------

def reader_defects(brief: Brief, sections: list[tuple[str, str]], embed, lexicon: quality.Lexicon,
                   known: str, passages: dict[int, list[str]] | None = None) -> list[tuple[int, str, str]]:
    """(section index, sentence, kind) of each sentence the independent measures count as a
    defect: "meta" (the chatter classifier), "repeated" (in its own section or from an earlier
    one), "off-brief", "junk" (a word no lexicon knows) and "claim" (a date, number or name no
    source supports). A sentence counts once, under the first kind that finds it."""
    from agents import chatter, claims
    from agents.citations import Support
    from agents.roles import reader_checks

    per_section = [quality.sentences(quality.normalise(text)) for _, text in sections]
    said = [s for found in per_section for s in found]
    meta = iter(chatter.default_chatter().probability(said).tolist() if said else [])
    allowed = quality.allowed_words(brief.topic, brief.notes, brief.audience, known, *[h for h, _ in sections])
    about = f"{brief.topic}. {brief.notes}".strip(". ")
    earlier: set[tuple[str, ...]] = set()
    defects = []
    for index, ((heading, _), found) in enumerate(zip(sections, per_section, strict=True)):
        on_brief = quality.OnBrief([about, heading], embed)
        supports = _supports(Support(passages[index], embed)) if passages and passages.get(index) else None
        here: list[set[tuple[str, ...]]] = []
        for sentence in found:
            grams = set(quality.four_grams(sentence))
            repeated = bool(grams) and (len(grams & earlier) >= LOOP_OVERLAP * len(grams) or any(
                len(grams & other) >= LOOP_OVERLAP * len(grams) for other in here))
            kinds = [("meta", next(meta) >= chatter.THRESHOLD and quality.has_words(sentence)), ("repeated", repeated),
                     ("off-brief", not on_brief(sentence)),
                     ("junk", bool(reader_checks.unknown_words(sentence, lexicon, allowed))),
                     ("claim", bool(claims.unsupported(sentence, known, supports)))]
            kind = next((name for name, found_it in kinds if found_it), None)
            if kind:
                defects.append((index, sentence, kind))
            here.append(grams)
        for grams in here:
            earlier |= grams
    return defects


def _supports(support) -> Callable[[str], bool]:
    return lambda sentence: max(support.scores(sentence).values(), default=0.0) >= support.threshold


def reviewer_recall(defects: list[tuple[int, str, str]], proposals: list[tuple[int, str]]) -> dict[str, float | None]:
    """Of the defects, the share (%) on which the reviewer made a proposal (its span holds the
    sentence, or the sentence its span), overall and per kind; None where there is none."""
    spans: dict[int, list[str]] = {}
    for index, original in proposals:
        spans.setdefault(index, []).append(quality.normalise(original))

    def found(index: int, sentence: str) -> bool:
        return any(sentence in span or span in sentence for span in spans.get(index, []))

    scores: dict[str, float | None] = {"reviewer_recall": None}
    if defects:
        scores["reviewer_recall"] = 100 * sum(found(i, s) for i, s, _ in defects) / len(defects)
    for kind in ("meta", "repeated", "off-brief", "junk", "claim"):
        mine = [(i, s) for i, s, k in defects if k == kind]
        scores[f"reviewer_recall_{kind}"] = 100 * sum(found(i, s) for i, s in mine) / len(mine) if mine else None
    return scores
