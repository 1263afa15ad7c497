"""The whole hierarchy in one process, without the web app: plan, split, write all leaves in
parallel batches. `manage.py evaluate` and bench/pipeline.py use it; the app runs the same roles
through Celery (webapp/runs). Also the single-agent baseline: one prompt, the whole article."""

from __future__ import annotations

import math
import re
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field

from agents.llm.types import Engine, GenerationRequest
from agents.outline import Brief, PlannedSection, split_for_writers
from agents.roles import chief_editor, finisher, section_writer


@dataclass
class Article:
    title: str
    sections: list[tuple[str, str]]  # (heading, text) of the leaves, in reading order
    headings: list[str]  # top-level headings
    outline_path: str = ""
    lead: str = ""
    seconds: float = 0.0
    extra: dict = field(default_factory=dict)

    @property
    def text(self) -> str:
        return "\n\n".join([self.lead] * bool(self.lead) + [text for _, text in self.sections])

    @property
    def words(self) -> int:
        return len(self.text.split())


def outline_text(sections: list[PlannedSection], depth: int = 0, prefix: str = "") -> str:
    lines = []
    for index, section in enumerate(sections, start=1):
        number = f"{prefix}{index}"
        lines.append(f"{'  ' * depth}{number}. {section.heading} ({section.words} words)")
        if section.children:
            lines.append(outline_text(section.children, depth + 1, number + "."))
    return "\n".join(lines)


def leaves_with_neighbours(sections: list[PlannedSection]) -> list[section_writer.SectionTask]:
    leaves = [leaf for section in sections for leaf in section.leaves()]
    tasks = []
    for index, leaf in enumerate(leaves):
        before = leaves[index - 1] if index > 0 else None
        after = leaves[index + 1] if index + 1 < len(leaves) else None
        tasks.append(section_writer.SectionTask(
            key=str(index), heading=leaf.heading, words=leaf.words, goal=leaf.goal, key_points=leaf.key_points,
            before=f"{before.heading}: {before.goal}" if before else "",
            after=f"{after.heading}: {after.goal}" if after else ""))
    return tasks


def write_article(engine: Engine, brief: Brief, batch_size: int = 16, max_words_per_writer: int = 600,
                  sections: list[PlannedSection] | None = None, finish_article: bool = True,
                  passages: Callable[[str], list[str]] | None = None) -> Article:
    """`passages(query)` gives each writer its source passages, cited as [1], [2], ..."""
    started = time.monotonic()
    path = "given"
    if sections is None:
        plan = chief_editor.plan_outline(engine, brief)
        sections, path = plan.sections, plan.path
    sections = split_for_writers(sections, max_words_per_writer)
    outline = outline_text(sections)
    tasks = leaves_with_neighbours(sections)
    for task in tasks if passages else []:
        task.passages = passages(f"{task.heading}. {task.goal}")
    written: dict[str, section_writer.WrittenSection] = {}
    for start in range(0, len(tasks), batch_size):
        written.update(section_writer.write_sections(engine, brief, outline, tasks[start:start + batch_size]))
    leaves = [(t.heading, written[t.key].text) for t in tasks]
    finish = finisher.finish(engine, brief, leaves) if finish_article else None
    return Article(title=finish.title if finish else brief.topic, lead=finish.lead if finish else "",
                   sections=leaves, headings=[s.heading for s in sections], outline_path=path,
                   seconds=time.monotonic() - started,
                   extra={"title_path": finish.title_path, "lead_path": finish.lead_path} if finish else {})


def write_sequentially(engine: Engine, brief: Brief, sections: list[PlannedSection]) -> Article:
    """The same sections, one writer after another (for comparison with the parallel batch)."""
    return write_article(engine, brief, batch_size=1, sections=sections, finish_article=False)


def single_agent(engine: Engine, brief: Brief, passages: Callable[..., list[str]] | None = None) -> Article:
    """The baseline: one prompt asks for the whole article (with the passages nearest the topic)."""
    started = time.monotonic()
    words = brief.target_words
    sources = ""
    if passages:
        found = passages(brief.topic, k=5)
        sources = "\n\nUse these sources and cite them by number, like [1]:\n" + "\n".join(
            f"[{i}] {passage}" for i, passage in enumerate(found, start=1))
    request = GenerationRequest(
        id=f"single-{uuid.uuid4().hex[:6]}", repetition_penalty=1.15,
        messages=[{"role": "system", "content": "You are a writer."},
                  {"role": "user", "content": f"{chief_editor.brief_text(brief)}\n\nWrite the whole article now, "
                                              f"about {words} words, with a heading for each section.{sources}"}],
        max_new_tokens=math.ceil(words * section_writer.HIGH * section_writer.TOKENS_PER_WORD),
        min_new_tokens=math.floor(words * section_writer.LOW * section_writer.TOKENS_PER_WORD))
    text = "".join(delta.text for delta in engine.stream([request]))
    # Split at the headings it wrote, so its sections can be scored like the team's.
    sections: list[tuple[str, str]] = [("", "")]
    for line in text.splitlines():
        heading = re.match(r"^\s*(?:#{1,6}\s+|\d+\.\s+)(.+)$", line)
        if heading:
            sections.append((heading.group(1).strip(" *:"), ""))
        else:
            sections[-1] = (sections[-1][0], (sections[-1][1] + "\n" + line).strip())
    sections = [(h, t) for h, t in sections if t]
    return Article(title=brief.topic, sections=sections, headings=[h for h, _ in sections if h],
                   outline_path="single", seconds=time.monotonic() - started)
