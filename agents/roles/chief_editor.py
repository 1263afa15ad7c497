"""The chief editor: turns the brief into an outline with word budgets.

It asks the model for JSON, reads the answer leniently and repairs it; if that fails it asks once
more, saying what was wrong; if that fails too, it builds the outline from the brief. The path
taken is returned, so the run can record it: a 135M model often writes junk, and the user must
never see a broken outline."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field

from agents.llm.types import AdapterSpec, Engine, GenerationRequest
from agents.outline import (
    Brief,
    InvalidOutline,
    PlannedSection,
    check_outline,
    fallback_outline,
    parse_outline,
    repair_outline,
)

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


def _sections_wanted(brief: Brief) -> str:
    low = max(3, min(8, brief.target_words // 400))
    return f"{low} to {min(10, low + 3)}"


def first_request(brief: Brief, adapter: AdapterSpec | None) -> GenerationRequest:
    user = (f"Plan this article.\n{brief_text(brief)}\n\nList {_sections_wanted(brief)} section headings, one per "
            "line, numbered 1., 2., 3. and so on. After each heading write a colon and one sentence saying what "
            "the section covers.")
    return GenerationRequest(id=f"{ROLE}-{uuid.uuid4().hex[:8]}", adapter=adapter, max_new_tokens=300,
                             messages=[{"role": "system", "content": SYSTEM}, {"role": "user", "content": user}])


def second_request(brief: Brief, adapter: AdapterSpec | None, problem: str) -> GenerationRequest:
    user = (f"Plan this article.\n{brief_text(brief)}\n\nYour last plan could not be used ({problem}). "
            f"Write only a numbered list of {_sections_wanted(brief)} different section headings about the topic, "
            "one per line, numbered 1., 2., 3. and so on.")
    return GenerationRequest(id=f"{ROLE}-{uuid.uuid4().hex[:8]}", adapter=adapter, max_new_tokens=300,
                             messages=[{"role": "system", "content": SYSTEM}, {"role": "user", "content": user}])


@dataclass
class PlanResult:
    sections: list[PlannedSection]
    path: str  # "model", "model-repaired", "re-asked" or "fallback"
    answers: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)


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


def plan_outline(engine: Engine, brief: Brief, adapter: AdapterSpec | None = None) -> PlanResult:
    result = PlanResult(sections=[], path="fallback")
    for attempt in range(2):
        request = first_request(brief, adapter) if attempt == 0 else second_request(brief, adapter, result.problems[-1])
        try:
            answer = _ask(engine, request)
            result.answers.append(answer)
            parsed = parse_outline(answer)
            try:
                check_outline(parsed, brief.target_words)
                path = "model" if attempt == 0 else "re-asked"
            except InvalidOutline:
                path = "model-repaired" if attempt == 0 else "re-asked"
            result.sections, result.path = repair_outline(parsed, brief), path
            return result
        except InvalidOutline as problem:
            result.problems.append(str(problem))
    result.sections = fallback_outline(brief)
    return result
