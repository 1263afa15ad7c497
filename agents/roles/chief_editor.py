"""The chief editor: turns the brief into an outline with word budgets.

It asks the model for JSON, reads the answer leniently and repairs it; if that fails it asks once
more, saying what was wrong; if that fails too, it builds the outline from the brief. The path
taken is returned, so the run can record it: a 135M model often writes junk, and the user must
never see a broken outline."""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from agents.headings import as_heading, heading_problem
from agents.llm.types import AdapterSpec, Engine, GenerationRequest
from agents.outline import (
    MAX_TOP_SECTIONS,
    Brief,
    InvalidOutline,
    PlannedSection,
    _content_words,
    check_outline,
    fallback_outline,
    parse_outline,
    repair_outline,
)
from agents.quality import Instructions, is_meta

if TYPE_CHECKING:
    import torch

ROLE = "chief_editor"

SYSTEM = "You are the chief editor of a team of writers. You plan articles section by section."

# Small models copy examples and loop on JSON; a numbered list of headings is what they write
# best. The parser also accepts JSON (larger models often answer in it), and the word budgets
# are set by repair_outline from the target, unless the model gave usable ones.


def brief_text(brief: Brief) -> str:
    lines = [f"Topic: {brief.topic}", f"Length: about {brief.target_words} words", f"Language: {brief.language}"]
    if brief.audience:
        lines.append(f"Readers: {brief.audience}")
    if brief.tone:
        lines.append(f"Tone: {brief.tone}")
    if brief.notes:
        lines.append(f"Notes: {brief.notes}")
    if brief.source_titles:
        lines.append("Sources: " + "; ".join(brief.source_titles))
    return "\n".join(lines)


def _sections_wanted(brief: Brief) -> tuple[int, int]:
    low = max(3, min(8, brief.target_words // 400))
    return low, min(10, low + 3)


GOAL_VERBS = "Explain|Describe|Show|Tell|Trace|Compare|Introduce|Sum up|Give|Present|Outline"
# Headings and key points in plain words: no numbering, no markup, no line breaks, and no comma:
# where the model would go on into a clause ("How to be a birdwatcher, from the first day of every
# month"), the closing quote is the next best token, so the heading ends there instead of at the
# length cap mid-word (5 of the 6 headings of one brief, bench/RESULTS.md).
HEADING = "^[A-Z][A-Za-z0-9 '&:-]*$"
HEADING_MAX, POINT_MAX = 60, 60
GOAL = f"^(?:{GOAL_VERBS}) [a-z][A-Za-z0-9 ,'()&:;-]{{15,150}}[.]$"  # one sentence saying what the section does
POINT = "^[A-Z][A-Za-z0-9 '&-]*$"


def outline_schema(low: int, high: int) -> dict:
    """What the chief editor's answer must be (guided decoding): low to high sections, each a
    heading, a goal sentence and a few key points, in plain words."""
    return {"type": "object", "additionalProperties": False, "required": ["sections"], "properties": {
        "sections": {"type": "array", "minItems": low, "maxItems": high, "items": {
            "type": "object", "additionalProperties": False, "required": ["heading", "goal", "key_points"],
            "properties": {
                "heading": {"type": "string", "minLength": 3, "maxLength": HEADING_MAX, "pattern": HEADING},
                "goal": {"type": "string", "minLength": 25, "maxLength": 160, "pattern": GOAL},
                "key_points": {"type": "array", "minItems": 1, "maxItems": 3, "items": {
                    "type": "string", "minLength": 3, "maxLength": POINT_MAX, "pattern": POINT}}}}}}}


def _format(brief: Brief) -> dict:
    schema = outline_schema(*_sections_wanted(brief))
    return {"type": "json_schema", "json_schema": {"name": "outline", "schema": schema}}


def _cover(topics: list[str]) -> str:
    if not topics:
        return ""
    return "\nThe article must cover, each under its own heading: " + "; ".join(topics) + "."


def first_request(brief: Brief, adapter: AdapterSpec | None, topics: Sequence[str] = ()) -> GenerationRequest:
    low, high = _sections_wanted(brief)
    user = (f"Plan this article.\n{brief_text(brief)}{_cover(list(topics))}\n\nGive {low} to {high} sections, each "
            "on a different part of the topic, in reading order. For each: a short heading, a goal (one sentence "
            "on what the reader learns there) and key points. Answer in JSON: "
            '{"sections": [{"heading": "...", "goal": "...", "key_points": ["...", "..."]}]}')
    return GenerationRequest(id=f"{ROLE}-{uuid.uuid4().hex[:8]}", adapter=adapter, max_new_tokens=600,
                             response_format=_format(brief), repetition_penalty=1.1,
                             messages=[{"role": "system", "content": SYSTEM}, {"role": "user", "content": user}])


def second_request(brief: Brief, adapter: AdapterSpec | None, problem: str,
                   topics: Sequence[str] = ()) -> GenerationRequest:
    low, high = _sections_wanted(brief)
    user = (f"Plan this article.\n{brief_text(brief)}{_cover(list(topics))}\n\nYour last plan could not be used "
            f"({problem}). Give {low} to {high} sections with different headings about the topic, in JSON: "
            '{"sections": [{"heading": "...", "goal": "...", "key_points": ["..."]}]}')
    return GenerationRequest(id=f"{ROLE}-{uuid.uuid4().hex[:8]}", adapter=adapter, max_new_tokens=600,
                             response_format=_format(brief), repetition_penalty=1.1,
                             messages=[{"role": "system", "content": SYSTEM}, {"role": "user", "content": user}])


# --- the brief's own subtopics -------------------------------------------------------------

def subtopics(brief: Brief) -> list[str]:
    """What the brief itself asks to be covered: the parts of its topic after a colon ("...: from
    the Pharos of Alexandria to automated modern lights"), the items of its notes, and its
    sources' titles. Each should get a heading."""
    found: list[str] = []
    _, colon, detail = brief.topic.partition(":")
    if colon:
        span = re.match(r"\s*from (.+?) to (.+)$", detail, re.I)
        found += list(span.groups()) if span else _items(detail)
    for line in re.split(r"\n|;", brief.notes or ""):
        line = re.sub(r"^\s*(?:[-*•]|\d+[.)])\s*", "", line)
        line = re.sub(r"^(?:cover|include|mention|explain|discuss|describe)s?\s*:?\s*", "", line.strip(), flags=re.I)
        found += _items(line) if len(line.split()) <= 20 else []
    found += [title for title in brief.source_titles if 1 <= len(title.split()) <= 10]
    cleaned = [re.sub(r"\s+", " ", t).strip(" .,:;!?\"'…").rstrip(".") for t in found]
    unique: dict[str, str] = {}
    for topic in cleaned:
        if sum(ch.isalpha() for ch in topic) >= 3:
            unique.setdefault(topic.lower(), topic[:1].upper() + topic[1:])
    return list(unique.values())[:MAX_TOP_SECTIONS]


def _items(text: str) -> list[str]:
    """"a, b and c" -> [a, b, c]; "x and y" alone stays one item (a pair is often one subject)."""
    parts = [part for part in re.split(r",\s*", text) if part.strip()]
    if len(parts) > 1:
        last = parts[-1]
        # "a, b, and c and d": after a serial comma the last item is "c and d", one subject.
        parts[-1:] = [re.sub(r"^(?:and|or)\s+", "", last)] if re.match(r"(?:and|or)\s", last) \
            else re.split(r"\s+(?:and|or)\s+", last)
    return [part for part in parts if part.strip()]


# --- headings on the brief -----------------------------------------------------------------

DUPLICATE = 0.74  # cosine of MiniLM heading embeddings; training/data/labelled/heading_pairs.json (bench/calibrate.py)
MIN_SECTIONS = 3  # an outline with fewer is asked once more (see plan_outline)
RESTATES_TITLE = 0.9  # cosine of a heading to the title above which it says nothing more
COVERED = 0.6  # a heading covers a subtopic at this cosine or above, or when it holds its content words

Embed = Callable[[list[str]], "torch.Tensor"]


def duplicate_pairs(headings: list[str], embed: Embed) -> list[tuple[int, int, float]]:
    """(i, j, cosine) for i < j whose headings are near-duplicates."""
    if len(headings) < 2:
        return []
    vectors = embed(headings)
    similarity = vectors @ vectors.T
    return [(i, j, float(similarity[i, j])) for i in range(len(headings)) for j in range(i + 1, len(headings))
            if float(similarity[i, j]) >= DUPLICATE]


def covered(topics: list[str], headings: list[str], embed: Embed) -> list[bool]:
    """Whether each subtopic has a heading of its own."""
    if not topics:
        return []
    if not headings:
        return [False] * len(topics)
    similarity = embed(topics) @ embed(headings).T
    result = []
    for index, topic in enumerate(topics):
        words = _content_words(topic)
        held = any(words and words <= _content_words(heading) for heading in headings)
        result.append(held or float(similarity[index].max()) >= COVERED)
    return result


def restating(title: str, headings: list[str], embed: Embed) -> list[int]:
    """The headings that only restate the article's title: no word of their own and most of the
    title's (before a colon): "Why Sleep Matters" in "Why sleep matters for health", but not "The
    Printing Press" in "How the printing press changed Europe"; or near-identical in meaning. A
    heading on a part of the subject shares the title's words and much of its meaning ("How Sleep
    Affects Your Health", "Bicycles in the past"): at the headings' duplicate threshold (0.74) every
    heading of 2 or 3 of the 14 briefs went (which ones depends on the CPU), and those outlines fell
    back to a template."""
    similarity = (embed([title]) @ embed(headings).T)[0]
    theirs = _content_words(title.split(":")[0])
    restates = [_content_words(heading) for heading in headings]
    return [index for index, words in enumerate(restates)
            if (words <= theirs and 3 * len(words) >= 2 * len(theirs)) or float(similarity[index]) >= RESTATES_TITLE]


def different(have: list[PlannedSection], offered: list[PlannedSection], embed: Embed) -> list[PlannedSection]:
    """The offered sections whose heading is no near-duplicate of one we have."""
    if not have or not offered:
        return list(offered)
    similarity = embed([s.heading for s in offered]) @ embed([s.heading for s in have]).T
    return [section for index, section in enumerate(offered) if float(similarity[index].max()) < DUPLICATE]


def on_the_brief(sections: list[PlannedSection], topics: list[str], embed: Embed, high: int,
                 title: str = "") -> list[PlannedSection]:
    """Near-duplicate headings merged (the later one's key points go to the first), a heading
    that only restates the article's `title` dropped, then every subtopic no heading covers gets
    a section: in place of a merged one, or added (up to `high`). Sections added here have no goal
    yet. InvalidOutline when fewer than two different headings are left (the editor re-asks)."""
    kept = list(sections)
    headings = [s.heading for s in kept]
    dropped = set(restating(title, headings, embed)) if title and headings else set()
    for i, j, _ in duplicate_pairs(headings, embed):
        if i in dropped or j in dropped:
            continue
        dropped.add(j)
        kept[i].key_points = list(dict.fromkeys(kept[i].key_points + kept[j].key_points))
    if len(kept) - len(dropped) < 2 and not topics:  # too little is left: the chief editor is asked again
        raise InvalidOutline("its headings repeat each other or the article's title; give different headings")
    kept = [s for index, s in enumerate(kept) if index not in dropped]
    missing = [t for t, ok in zip(topics, covered(topics, [s.heading for s in kept], embed), strict=True) if not ok]
    for topic in missing:
        new = PlannedSection(heading=topic, goal="", key_points=[])
        if len(kept) < high:
            kept.append(new)
        else:  # the section least like any subtopic makes way
            scores = embed([s.heading for s in kept]) @ embed(topics).T
            weakest = int(scores.max(dim=1).values.argmin())
            kept[weakest] = new
    # Reading order: subtopics in the order the brief gives them, the rest where they were.
    order = {t.lower(): i for i, t in enumerate(topics)}
    ranked = sorted(enumerate(kept), key=lambda pair: (order.get(pair[1].heading.lower(), pair[0] - 0.5), pair[0]))
    return [s for _, s in ranked] if missing else kept


def goal_request(brief: Brief, heading: str, adapter: AdapterSpec | None) -> GenerationRequest:
    # Small models copy the longest text in sight: the topic is shortened to its subject, and the
    # heading comes last.
    subject = brief.topic.split(":")[0].strip()
    user = (f"In one sentence, say what a reader learns in the section \"{heading}\" of an article about "
            f"{subject[:1].lower() + subject[1:]}. Start with Explain, Describe, Show or Tell. The section: {heading}.")
    regex = "(?:Explain|Describe|Show|Tell|Trace) [a-z][A-Za-z0-9 ,'()&;-]{15,150}[.]"
    return GenerationRequest(id=f"{ROLE}-goal-{uuid.uuid4().hex[:8]}", adapter=adapter, max_new_tokens=60,
                             response_format={"type": "regex", "regex": regex},
                             repetition_penalty=1.1, messages=[{"role": "user", "content": user}])


def write_goals(engine: Engine, brief: Brief, sections: list[PlannedSection], adapter: AdapterSpec | None) -> None:
    """A goal for every section that has none, written by the model (one batch); a template only
    when the model's sentence is about the writing or failed."""
    missing = [s for s in sections if not s.goal.strip()]
    if not missing:
        return
    batch = [goal_request(brief, s.heading, adapter) for s in missing]
    requests = {r.id: s for r, s in zip(batch, missing, strict=True)}
    text = {rid: "" for rid in requests}
    try:
        for delta in engine.stream(batch):
            text[delta.request_id] += delta.text
    except Exception:  # noqa: BLE001  (a goal is not worth failing the plan over)
        pass
    for (rid, section), request in zip(requests.items(), batch, strict=True):
        goal = text.get(rid, "").strip()
        # A sentence that repeats three words of its instructions ("in one sentence") is no goal.
        told = Instructions.of((request.messages or [{}])[-1].get("content", ""), [section.heading, brief.topic], n=3)
        if len(goal.split()) < 4 or is_meta(goal) or told.echoed(goal):
            goal = f"Explain {section.heading[:1].lower() + section.heading[1:]} for {brief.audience or 'the reader'}."
        section.goal = goal


@dataclass
class PlanResult:
    sections: list[PlannedSection]
    path: str  # "model", "model-repaired", "re-asked" or "fallback"
    answers: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)


DANGLING = re.compile(r"(?:\s+(?:a|an|the|to|of|from|and|or|for|in|on|with|at|by|as|its|their|that|which|is|are)\b)+$",
                      re.I)


def _uncut(text: str, limit: int) -> str:
    """Text the schema cut at its length cap ("...From the early beginnings to "): without the
    word that was cut and the words left dangling at the end."""
    if len(text) != limit:  # only the cap cuts at exactly this length (other backends write longer)
        return text
    if not text.endswith(" "):
        text = text.rsplit(" ", 1)[0]  # the last word may have been cut
    return DANGLING.sub("", text.rstrip(" ,:;-&")).rstrip(" ,:;-&")


def uncut(section: PlannedSection) -> PlannedSection:
    """The section with its heading and key points whole again, where the schema's cap cut them."""
    section.heading = _uncut(section.heading, HEADING_MAX) or section.heading
    section.key_points = [point for point in (_uncut(p, POINT_MAX) for p in section.key_points) if point]
    return section


def named(sections: list[PlannedSection], topics: Sequence[str] = ()) -> list[PlannedSection]:
    """Every section with a heading that is a heading (agents/headings.py): repaired where it can
    be ("Section 2: How to make bread" -> "Making bread"), else named by its first key point that
    makes one, else dropped. A brief's own subtopic is the person's words and stays as it is."""
    theirs = {topic.lower() for topic in topics}
    kept = []
    for section in sections:
        if section.heading.lower() in theirs:
            kept.append(section)
            continue
        for candidate in [section.heading, *section.key_points]:
            heading = as_heading(candidate)
            if heading_problem(heading) is None:
                section.heading = heading
                kept.append(section)
                break
        section.children = named(section.children, topics)
    return kept


def _ask(engine: Engine, request: GenerationRequest) -> str:
    text = []
    for delta in engine.stream([request]):
        if delta.finish_reason == "error":
            raise InvalidOutline(f"the model failed: {delta.error}")
        text.append(delta.text)
        if delta.finish_reason == "length":
            # Cut off mid-line: the last line is unfinished ("Impact on"), so leave it out.
            return "".join(text).rsplit("\n", 1)[0]
    return "".join(text)


def plan_outline(engine: Engine, brief: Brief, adapter: AdapterSpec | None = None,
                 embed: Embed | None = None) -> PlanResult:
    """Ask (under the outline schema), merge near-duplicate headings, give every subtopic of the
    brief a heading, repair budgets; re-ask once when too little is left, or when only two
    sections are (the second answer's different sections join the first's); else fall back to an
    outline built from the brief and its subtopics. Goals missing at the end are written."""
    if embed is None:
        from agents.retrieval import default_embedder
        embed = default_embedder().embed
    topics = subtopics(brief)
    low, high = _sections_wanted(brief)
    result = PlanResult(sections=[], path="fallback")
    first: list[PlannedSection] = []  # a usable first answer with too few sections
    for attempt in range(2):
        request = first_request(brief, adapter, topics) if attempt == 0 else \
            second_request(brief, adapter, result.problems[-1], topics)
        try:
            answer = _ask(engine, request)
            result.answers.append(answer)
            parsed = named([uncut(section) for section in parse_outline(answer)], topics)
            try:
                check_outline(parsed, brief.target_words)
                path = "model" if attempt == 0 else "re-asked"
            except InvalidOutline:
                path = "model-repaired" if attempt == 0 else "re-asked"
            before = [s.heading for s in parsed]
            parsed = on_the_brief(parsed, topics, embed, high, brief.topic)
            if [s.heading for s in parsed] != before and path == "model":
                path = "model-repaired"
            if first:
                parsed = first + different(first, parsed, embed)[:low - len(first)]
            result.sections, result.path = repair_outline(parsed, brief), path
        except InvalidOutline as problem:
            result.problems.append(str(problem))
            continue
        if len(parsed) >= MIN_SECTIONS or attempt == 1:
            break
        # Repeats merged and restatements of the title dropped left two sections: each would run
        # long (and a long one is split into "(1 of 2)" parts). A second answer adds to them.
        first = parsed
        result.problems.append(f"only {len(parsed)} different sections are left; give {low} to {high}")
    if not result.sections:
        result.sections = fallback_outline(brief, topics)
        for section in result.sections[1:-1]:  # the body's goals are written, not templated
            section.goal = ""
    write_goals(engine, brief, result.sections, adapter)
    return result
