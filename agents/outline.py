"""Outlines: what the chief editor plans, read leniently from whatever a model wrote, repaired,
and when nothing usable came out, built deterministically from the brief.

Every function here returns an outline that passes `check_outline`: at least two top-level
sections, every heading real text, word budgets that add up to the target (within 5%) and
children that add up to their parent, at most three levels deep."""

from __future__ import annotations

import json
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, field

from agents.headings import as_heading, heading_problem

MAX_DEPTH = 3
MIN_SECTION_WORDS = 40
MIN_TOP_SECTION_WORDS = 100  # fewer, fuller top-level sections: a 500-word article has five at most
MAX_TOP_SECTIONS = 10
MAX_KEY_POINTS = 6
MAX_HEADING_WORDS = 14


@dataclass
class Brief:
    topic: str
    target_words: int = 1500
    audience: str = ""
    tone: str = ""
    language: str = "English"
    notes: str = ""
    source_titles: list[str] = field(default_factory=list)


@dataclass
class PlannedSection:
    heading: str
    goal: str = ""
    key_points: list[str] = field(default_factory=list)
    words: int = 0
    children: list[PlannedSection] = field(default_factory=list)
    key: str = ""  # who stores it (the app: the section's id); empty for a plan not stored yet

    def leaves(self) -> list[PlannedSection]:
        return [leaf for child in self.children for leaf in child.leaves()] if self.children else [self]

    def as_dict(self) -> dict:
        return {"heading": self.heading, "goal": self.goal, "key_points": list(self.key_points),
                "words": self.words, "children": [c.as_dict() for c in self.children]}


class InvalidOutline(ValueError):
    pass


# --- reading what a model wrote ------------------------------------------------------------

HEADING_KEYS = ("heading", "title", "name", "section", "header")
GOAL_KEYS = ("goal", "purpose", "description", "summary", "aim", "objective")
POINT_KEYS = ("key_points", "keypoints", "points", "bullets", "topics", "content")
WORD_KEYS = ("words", "word_budget", "budget", "word_count", "length", "target_words")
CHILD_KEYS = ("children", "subsections", "sections", "subs")


def _first(data: dict, keys: tuple[str, ...]):
    lowered = {str(k).lower().replace(" ", "_").replace("-", "_"): v for k, v in data.items()}
    for key in keys:
        if key in lowered and lowered[key] not in (None, ""):
            return lowered[key]
    return None


def _words(value) -> int:
    if isinstance(value, bool):
        return 0
    if isinstance(value, int | float) and math.isfinite(value):
        return max(0, int(value))
    match = re.search(r"\d[\d,]*", str(value or ""))
    return int(match.group().replace(",", "")) if match else 0


def _points(value) -> list[str]:
    if isinstance(value, list):
        return [str(p if not isinstance(p, dict) else _first(p, HEADING_KEYS + GOAL_KEYS) or "") for p in value]
    if isinstance(value, str):
        return [p for p in re.split(r"\n|;|•", value)]
    return []


def _from_json(data, depth: int = 0) -> list[PlannedSection]:
    if isinstance(data, dict):
        nested = _first(data, ("outline", "sections")) if _first(data, HEADING_KEYS) is None else None
        data = nested if isinstance(nested, list) else [data]
    if not isinstance(data, list) or depth > 6:
        return []
    sections = []
    for item in data:
        if isinstance(item, str):
            sections.append(PlannedSection(heading=item))
            continue
        if not isinstance(item, dict):
            continue
        children = _first(item, CHILD_KEYS)
        sections.append(PlannedSection(
            heading=str(_first(item, HEADING_KEYS) or ""),
            goal=str(_first(item, GOAL_KEYS) or ""),
            key_points=_points(_first(item, POINT_KEYS)),
            words=_words(_first(item, WORD_KEYS)),
            children=_from_json(children, depth + 1) if isinstance(children, list | dict) else [],
        ))
    return sections


def _json_candidates(text: str):
    """Every balanced [...] or {...} span, outermost first, tolerating code fences and chatter."""
    for opening, closing in (("[", "]"), ("{", "}")):
        start = text.find(opening)
        while start != -1:
            depth, in_string, escaped = 0, False, False
            for index in range(start, len(text)):
                char = text[index]
                if in_string:
                    escaped = char == "\\" and not escaped
                    if char == '"' and not escaped:
                        in_string = False
                    continue
                if char == '"':
                    in_string = True
                elif char == opening:
                    depth += 1
                elif char == closing:
                    depth -= 1
                    if depth == 0:
                        yield text[start:index + 1]
                        break
            start = text.find(opening, start + 1)


def _loads_lenient(candidate: str):
    try:
        return json.loads(candidate)
    except ValueError:
        pass
    # Common slips of small models: trailing commas, single quotes.
    fixed = re.sub(r",\s*([\]}])", r"\1", candidate)
    if "'" in fixed and '"' not in fixed:
        fixed = fixed.replace("'", '"')
    try:
        return json.loads(fixed)
    except ValueError:
        return None


LINE = re.compile(r"^(?P<indent>\s*)(?:(?P<hashes>#{1,6})\s+|(?P<number>(?:\d+\.)*\d+[.)]?)\s+|(?P<bullet>[-*+])\s+)"
                  r"(?P<body>.+)$")


def _from_lines(text: str) -> list[PlannedSection]:
    """Markdown headings, numbered lists ("2.1 Heading") or bullets, nested by level."""
    roots: list[PlannedSection] = []
    stack: list[tuple[int, PlannedSection]] = []
    # "Section 2: Heading" (or Part, Chapter) is a numbered heading too.
    text = re.sub(r"(?im)^\s*(?:section|part|chapter)\s+(\d+)\s*[:.)-]\s*", r"\1. ", text)
    matches = [m for m in (LINE.match(raw.rstrip()) for raw in text.splitlines()) if m]
    # With headings or numbers present, bullets are the key points of the section above them.
    bullets_are_points = any(m["hashes"] or m["number"] for m in matches)
    for match in matches:
        if match["bullet"] and bullets_are_points:
            if stack:
                stack[-1][1].key_points.append(match["body"])
            continue
        if match["hashes"]:
            level = len(match["hashes"])
        elif match["number"]:
            level = match["number"].rstrip(".)").count(".") + 1 + len(match["indent"]) // 4
        else:
            level = 1 + len(match["indent"]) // 2
        body = match["body"]
        words = _words(m.group(1)) if (m := re.search(r"\(?\b(\d[\d,]*)\s*words?\b\)?", body, re.I)) else 0
        body = re.sub(r"\(?\b\d[\d,]*\s*words?\b\)?", "", body, flags=re.I)
        parts = re.split(r"\s[-–—]\s|:\s", body, maxsplit=1)
        heading, goal = parts[0], parts[1] if len(parts) > 1 else ""
        section = PlannedSection(heading=heading, goal=goal, words=words)
        while stack and stack[-1][0] >= level:
            stack.pop()
        (stack[-1][1].children if stack else roots).append(section)
        stack.append((level, section))
    return roots


def parse_outline(text: str) -> list[PlannedSection]:
    """Sections found in a model's answer, unrepaired; empty when there are none."""
    best: list[PlannedSection] = []
    for candidate in _json_candidates(text or ""):
        data = _loads_lenient(candidate)
        sections = _from_json(data) if data is not None else []
        if len(sections) > len(best):
            best = sections
        if len(best) >= 2:
            return best
    return best if best else _from_lines(text or "")


# --- repair --------------------------------------------------------------------------------

def _clean(text: str, limit: int) -> str:
    text = re.sub(r"[*_`#>\"“”]+", "", str(text))
    text = re.sub(r"^\s*(?:section\s+)?(?:\d+(?:\.\d+)*[.)]?|[ivxlc]+\.)\s+", "", text, flags=re.I)
    text = re.sub(r"\s+", " ", text).strip(" -–—:;,.")
    return text[:limit].rstrip()


def _is_text(text: str) -> bool:
    return sum(ch.isalpha() for ch in text) >= 2


def _distribute(total: int, weights: list[int], minimum: int) -> list[int]:
    """Integers proportional to weights (equal where a weight is missing) that sum to total."""
    count = len(weights)
    minimum = min(minimum, total // count)
    known = [w for w in weights if w > 0]
    fill = sum(known) / len(known) if known else 1
    raw = [w if w > 0 else fill for w in weights]
    spare = total - minimum * count
    scale = spare / sum(raw)
    shares = [minimum + r * scale for r in raw]
    result = [int(s) for s in shares]
    for index in sorted(range(count), key=lambda i: shares[i] - result[i], reverse=True)[:total - sum(result)]:
        result[index] += 1
    return result


STOPWORDS = frozenset({"a", "an", "the", "and", "or", "of", "to", "in", "on", "for", "with", "by", "from", "at",
                       "as", "is", "are", "be", "its", "it", "this", "that", "how", "why", "what", "when", "where",
                       "who", "your", "our", "their"})


def _content_words(heading: str) -> frozenset[str]:
    words = re.findall(r"[a-z0-9]+", heading.lower())
    return frozenset(w.rstrip("s") for w in words if w not in STOPWORDS)


def _near_duplicate(heading: str, earlier: list[frozenset[str]]) -> bool:
    """Mostly the same content words as an earlier heading ("Sleep is a key factor in health" and
    "Sleep is a key factor in a healthy life"): a small model's way of padding an outline."""
    words = _content_words(heading)
    return any(words and len(words & other) >= 0.6 * len(words | other) for other in earlier)


def _repair_level(sections: list[PlannedSection], brief: Brief, budget: int, depth: int) -> list[PlannedSection]:
    seen: list[frozenset[str]] = []
    kept: list[PlannedSection] = []
    for section in sections:
        heading = _clean(section.heading, 120)
        # A whole sentence or paragraph in a list item is text, not a heading.
        if not _is_text(heading) or _near_duplicate(heading, seen) or len(heading.split()) > MAX_HEADING_WORDS:
            continue
        seen.append(_content_words(heading))
        points = [_clean(p, 200) for p in section.key_points]
        kept.append(PlannedSection(
            heading=heading,
            goal=_clean(section.goal, 400),  # none: the chief editor has the model write one
            key_points=[p for p in dict.fromkeys(points) if _is_text(p)][:MAX_KEY_POINTS],
            words=section.words,
            children=section.children if depth < MAX_DEPTH else [],
        ))
    if depth == 1:
        max_sections = max(2, min(MAX_TOP_SECTIONS, budget // MIN_TOP_SECTION_WORDS))
    else:
        max_sections = max(2, budget // MIN_SECTION_WORDS)
    kept = kept[:max_sections]
    if not kept:
        return []
    for section, words in zip(kept, _distribute(budget, [s.words for s in kept], MIN_SECTION_WORDS), strict=True):
        section.words = words
        children = _repair_level(section.children, brief, words, depth + 1) if section.children else []
        section.children = children if len(children) >= 2 else []
    return kept


def repair_outline(sections: list[PlannedSection], brief: Brief) -> list[PlannedSection]:
    """Clean headings, drop junk and duplicates, cap depth, and set budgets that add up.
    Raises InvalidOutline when fewer than two usable top-level sections remain."""
    repaired = _repair_level(sections, brief, brief.target_words, 1)
    if len(repaired) < 2:
        raise InvalidOutline(f"only {len(repaired)} usable section(s)")
    check_outline(repaired, brief.target_words)
    return repaired


def check_outline(sections: list[PlannedSection], target_words: int) -> None:
    if len(sections) < 2:
        raise InvalidOutline("an outline needs at least two sections")
    total = sum(s.words for s in sections)
    if abs(total - target_words) > 0.05 * target_words:
        raise InvalidOutline(f"budgets add up to {total}, not {target_words}")

    def walk(level: list[PlannedSection], depth: int) -> None:
        for section in level:
            if not _is_text(section.heading):
                raise InvalidOutline(f"heading {section.heading!r} is not text")
            if section.words <= 0:
                raise InvalidOutline(f"{section.heading!r} has no word budget")
            if section.children:
                if depth >= MAX_DEPTH:
                    raise InvalidOutline(f"{section.heading!r} is nested deeper than {MAX_DEPTH} levels")
                if sum(c.words for c in section.children) != section.words:
                    raise InvalidOutline(f"the subsections of {section.heading!r} do not add up to it")
                walk(section.children, depth + 1)

    walk(sections, 1)


# --- the deterministic fallback ------------------------------------------------------------

BODY_HEADINGS = ["Background", "Key ideas", "How it works", "In practice", "Common questions",
                 "Challenges and limits", "What comes next", "Further details"]


def fallback_outline(brief: Brief, subtopics: Sequence[str] = ()) -> list[PlannedSection]:
    """An outline built from the brief alone: its subtopics (and source titles when there are
    sources) first, then generic headings; used when the model's answers could not be repaired.
    Always valid."""
    topic = _clean(brief.topic, 80) or "the topic"
    body_count = max(1, min(len(BODY_HEADINGS), round(brief.target_words / 300) - 1), len(subtopics))
    titles = [t for t in (_clean(t, 80) for t in list(subtopics) + brief.source_titles) if _is_text(t)]
    titles = list(dict.fromkeys(titles))
    body = (titles + [h for h in BODY_HEADINGS if h not in titles])[:body_count]
    sections = [PlannedSection("Introduction", f"Introduce {topic} and say what the reader will learn.", [], 1)]
    sections += [PlannedSection(heading, f"Cover {heading.lower()} of {topic}.", [], 3) for heading in body]
    sections.append(PlannedSection("Conclusion", f"Sum up what matters most about {topic}.", [], 1))
    return repair_outline(sections, brief)


def split_for_writers(sections: list[PlannedSection], max_words: int, depth: int = 1) -> list[PlannedSection]:
    """Deterministic split of leaves too long for one writer into parts named by their key points
    (used when the chief editor's own parts could not be had); children always add up to their
    parent. A leaf without enough key points that make headings stays whole."""
    for section in sections:
        if section.children:
            split_for_writers(section.children, max_words, depth + 1)
        elif section.words > max_words and depth < MAX_DEPTH:
            parts = math.ceil(section.words / max_words)
            names = [name for name in dict.fromkeys(as_heading(point) for point in section.key_points)
                     if heading_problem(name) is None]
            if len(names) < parts:
                continue  # no names for its parts: one writer writes it whole (never "(1 of 2)")
            section.children = [PlannedSection(name, f"Cover {name[:1].lower() + name[1:]}: part of {section.heading}.",
                                               [], words)
                                for name, words in zip(names[:parts], _distribute(section.words, [1] * parts, 1),
                                                       strict=True)]
    return sections
