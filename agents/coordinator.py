"""The team's work as plain functions over plain data: plan the outline, split it for writers,
give every leaf its writer task with its neighbours, write, review and finish.

Everything that writes an article calls these: the app's Celery tasks (webapp/runs, and so
`manage.py write`), `manage.py evaluate` and every benchmark, so what is measured is what people
get. The web layer around it keeps persistence, permissions and broadcasting; nothing here knows
about Django. Also the single-agent baseline: one prompt, the whole article."""

from __future__ import annotations

import math
import re
import time
import uuid
from collections.abc import Callable, Collection, Iterable
from dataclasses import dataclass, field

from agents import quality, steps
from agents.llm.types import AdapterSpec, CancelCheck, Engine, GenerationRequest
from agents.outline import Brief, PlannedSection, split_for_writers
from agents.roles import chief_editor, finisher, reader_checks, reviewer, section_writer, sub_sections

SECTION_MAX_WORDS = 600  # a leaf longer than this is planned as sub-sections for several writers
PASSAGES_PER_WRITER = 3
PASSAGE_CHARS = 600  # the most of one source passage a writer is shown


# --- the outline ------------------------------------------------------------------------------

def outline_text(sections: list[PlannedSection], details: bool = False) -> str:
    """The outline as writers (and revision diffs, with `details`: goals and key points) read it:
    "2.1. Heading (120 words)", indented by depth."""
    lines: list[str] = []

    def walk(level: list[PlannedSection], depth: int, prefix: str) -> None:
        for index, section in enumerate(level, start=1):
            number, indent = f"{prefix}{index}", "  " * depth
            lines.append(f"{indent}{number}. {section.heading} ({section.words} words)")
            if details:
                lines.extend([f"{indent}    Goal: {section.goal}"] * bool(section.goal))
                lines.extend(f"{indent}    - {point}" for point in section.key_points if point.strip())
            walk(section.children, depth + 1, number + ".")

    walk(sections, 0, "")
    return "\n".join(lines)


@dataclass
class Plan:
    sections: list[PlannedSection]  # split for writers: no leaf over max_words
    path: str  # how the outline came about: "model", "model-repaired", "re-asked" or "fallback"
    problems: list[str] = field(default_factory=list)


def plan(engine: Engine, brief: Brief, adapter: AdapterSpec | None = None,
         max_words: int = SECTION_MAX_WORDS) -> Plan:
    """The chief editor's outline for the brief, its big sections split into parts."""
    result = chief_editor.plan_outline(engine, brief, adapter)
    sub_sections.plan_parts(engine, brief, result.sections, max_words, adapter)
    return Plan(split_for_writers(result.sections, max_words), result.path, result.problems)


# --- writing ----------------------------------------------------------------------------------

def leaves(sections: list[PlannedSection]) -> list[PlannedSection]:
    """The sections writers write, in reading order."""
    return [leaf for section in sections for leaf in section.leaves()]


def writer_tasks(sections: list[PlannedSection]) -> list[section_writer.SectionTask]:
    """One task per leaf, keyed by the leaf's key (its position when it has none), each told what
    the leaves before and after it in reading order cover, across parent boundaries: the last
    part of one chapter knows how the next chapter opens."""
    ordered = leaves(sections)

    def describe(index: int) -> str:
        if not 0 <= index < len(ordered):
            return ""
        leaf = ordered[index]
        return f"{leaf.heading}: {leaf.goal}" if leaf.goal else leaf.heading

    return [section_writer.SectionTask(key=leaf.key or str(index), heading=leaf.heading, words=leaf.words or 150,
                                       goal=leaf.goal, key_points=list(leaf.key_points),
                                       before=describe(index - 1), after=describe(index + 1))
            for index, leaf in enumerate(ordered)]


def passage_query(task: section_writer.SectionTask) -> str:
    """What a writer's source passages are retrieved by."""
    return f"{task.heading}. {task.goal}"


def writer_prompt(brief: Brief, sections: list[PlannedSection],
                  task: section_writer.SectionTask) -> list[dict[str, str]]:
    """The messages a writer's first round sends (kept with the task, for training data)."""
    return section_writer.messages(brief, outline_text(sections), task)


def write(engine: Engine, brief: Brief, sections: list[PlannedSection], tasks: list[section_writer.SectionTask],
          drafts: dict[str, str] | None = None, options: section_writer.WriterOptions = section_writer.DEFAULTS,
          hooks: section_writer.WriterHooks = section_writer.NO_HOOKS) -> dict[str, section_writer.WrittenSection]:
    """Write `tasks` (some or all of the outline's leaves) together; see section_writer. Writers
    do not repeat each other's phrases, nor those in a task's `avoid` (sections written before);
    `hooks.on_done` gets each section the moment it is done, while the others are still written."""
    return section_writer.write_sections(engine, brief, outline_text(sections), tasks, drafts, options, hooks)


# --- review and finish ------------------------------------------------------------------------

def review(engine: Engine | None, topic: str, sections: list[tuple[str, str, str]],
           adapter: AdapterSpec | None = None, cancel: CancelCheck | None = None, skip: Iterable[str] = (),
           on_text: Callable[[str], None] | None = None, known: str | None = None,
           judges: reader_checks.Judges | None = None) -> list[reviewer.Proposal]:
    """The reviewer's proposals over (key, heading, text) of the written leaves; sections in
    `skip` (pinned) get none. With no engine, only the checks without the LLM; with no `judges`,
    none of those that read with the classifier, the lexicon and embeddings. `known`: the brief
    and the sources, which claims may rest on."""
    skip = set(skip)
    proposals = reviewer.review(engine, topic, sections, adapter=adapter if engine else None, cancel=cancel,
                                skip=skip, on_text=on_text, known=known, judges=judges)
    return [proposal for proposal in proposals if proposal.section_key not in skip]


def known_text(brief: Brief, sources: Iterable[str] = ()) -> str:
    """What a claim in the article may rest on: the brief and the sources' text."""
    return "\n".join([brief.topic, brief.notes, brief.audience, *brief.source_titles, *sources])


def finish(engine: Engine, brief: Brief, sections: list[tuple[str, str]], adapter: AdapterSpec | None = None,
           cancel: CancelCheck | None = None, on_text: Callable[[str], None] | None = None) -> finisher.Finish:
    """The finisher's title and lead for the written (heading, text) leaves."""
    return finisher.finish(engine, brief, sections, adapter=adapter, cancel=cancel, on_text=on_text)


# --- a whole article in one process -----------------------------------------------------------

@dataclass
class Article:
    title: str
    sections: list[tuple[str, str]]  # (heading, text) of the leaves, in reading order
    headings: list[str]  # top-level headings
    outline_path: str = ""
    lead: str = ""
    seconds: float = 0.0
    proposals: list[reviewer.Proposal] = field(default_factory=list)  # the reviewer's, not applied
    extra: dict = field(default_factory=dict)

    @property
    def text(self) -> str:
        return "\n\n".join([self.lead] * bool(self.lead) + [text for _, text in self.sections])

    @property
    def words(self) -> int:
        return len(self.text.split())


@dataclass
class _InProcess:
    """One in-process article: how it is written, and what each step hands the next."""
    engine: Engine
    brief: Brief
    batch_size: int
    max_words: int  # per writer
    passages: Callable[[str], list[str]] | None
    writers: section_writer.WriterOptions
    review: bool
    finish: bool
    sections: list[PlannedSection] = field(default_factory=list)
    path: str = "given"
    tasks: list[section_writer.SectionTask] = field(default_factory=list)
    written: dict[str, section_writer.WrittenSection] = field(default_factory=dict)
    proposals: list[reviewer.Proposal] = field(default_factory=list)
    done: finisher.Finish | None = None


def _plan_step(state: _InProcess) -> None:
    if state.sections:
        state.sections = split_for_writers(state.sections, state.max_words)
    else:
        planned = plan(state.engine, state.brief, max_words=state.max_words)
        state.sections, state.path = planned.sections, planned.path
    passages = state.passages
    state.tasks = writer_tasks(state.sections)
    for task in state.tasks:
        found = passages(passage_query(task))[:PASSAGES_PER_WRITER] if passages else []
        task.passages = [passage[:PASSAGE_CHARS] for passage in found]


def _write_step(state: _InProcess) -> None:
    for batch in steps.batches(state.tasks, state.batch_size):
        for task in batch:
            task.avoid = [written.text for written in state.written.values()]
        state.written.update(write(state.engine, state.brief, state.sections, batch, options=state.writers))


def _review_step(state: _InProcess) -> None:
    tasks, written = state.tasks, state.written
    if state.review:
        state.proposals = review(state.engine, state.brief.topic,
                                 [(t.key, t.heading, written[t.key].text) for t in tasks],
                                 known=known_text(state.brief, [p for t in tasks for p in t.passages]),
                                 judges=reader_checks.Judges.default())
    if state.finish:
        state.done = finish(state.engine, state.brief, [(t.heading, written[t.key].text) for t in tasks])


_STEP_IN_PROCESS = {steps.PLAN.name: _plan_step, steps.WRITE.name: _write_step, steps.REVIEW.name: _review_step}


def write_article(engine: Engine, brief: Brief, batch_size: int = 16, max_words_per_writer: int = SECTION_MAX_WORDS,
                  sections: list[PlannedSection] | None = None, finish_article: bool = True,
                  review_article: bool = True, passages: Callable[[str], list[str]] | None = None,
                  writer_adapter: AdapterSpec | None = None, filters: Collection[str] = quality.KINDS) -> Article:
    """What a run of the app does, without the app: the steps of agents/steps.py one after another
    (plan, unless `sections` are given, then split; write every leaf in batches; review and
    finish). `passages(query)` gives each writer its sources, cited as [1], [2], ... `filters`: the
    defect kinds the writers cut (none: what the model writes, to judge a model or an adapter by
    its own defect rates)."""
    started = time.monotonic()
    state = _InProcess(engine, brief, batch_size, max_words_per_writer, passages,
                       section_writer.WriterOptions(adapter=writer_adapter, filters=filters), review_article,
                       finish_article, sections=list(sections or []))
    for step in steps.STEPS:
        _STEP_IN_PROCESS[step.name](state)
    texts = [(t.heading, state.written[t.key].text) for t in state.tasks]
    done = state.done
    return Article(title=done.title if done else brief.topic, lead=done.lead if done else "",
                   sections=texts, headings=[s.heading for s in state.sections], outline_path=state.path,
                   seconds=time.monotonic() - started, proposals=state.proposals,
                   extra={"passages": {i: t.passages for i, t in enumerate(state.tasks)},
                          "cut": [list(c) for t in state.tasks for c in state.written[t.key].cut]}
                   | ({"title_path": done.title_path, "lead_path": done.lead_path} if done else {}))


def single_agent(engine: Engine, brief: Brief, passages: Callable[..., list[str]] | None = None) -> Article:
    """The baseline: one prompt asks for the whole article (with the passages nearest the topic)."""
    started = time.monotonic()
    words = brief.target_words
    sources = ""
    if passages:
        found = [passage[:PASSAGE_CHARS] for passage in passages(brief.topic, k=5)]
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
    found_sections: list[tuple[str, str]] = [("", "")]
    for line in text.splitlines():
        heading = re.match(r"^\s*(?:#{1,6}\s+|\d+\.\s+)(.+)$", line)
        if heading:
            found_sections.append((heading.group(1).strip(" *:"), ""))
        else:
            found_sections[-1] = (found_sections[-1][0], (found_sections[-1][1] + "\n" + line).strip())
    kept = [(h, t) for h, t in found_sections if t]
    return Article(title=brief.topic, sections=kept, headings=[h for h, _ in kept if h],
                   outline_path="single", seconds=time.monotonic() - started,
                   extra={"passages": {i: found for i in range(len(kept))}} if passages else {})
