"""What a section writer is asked, and how its answers are tidied and fitted to the budget: the
prompts (the brief and the outline first, shared by every writer of a batch; then the section's
own heading, goal, key points, neighbours and passages), and the clean-up of a model's answer
(echoed headings and labels, repeated sentences, a budget overrun, an unfinished last sentence).
The writer itself (the sentence search) is section_writer.py and sentence_search.py."""

from __future__ import annotations

import re
from collections.abc import Callable, Collection
from dataclasses import dataclass, field

from agents import quality
from agents.llm.types import AdapterSpec, Engine
from agents.outline import Brief

ROLE = "writer"  # the role's name: its adapter, its tasks, its requests
BLOCK_NGRAMS = 4  # writers of one run may not repeat each other's token 4-grams
TOKENS_PER_WORD = 1.45  # SmolLM2's tokenizer on English prose, measured on training/data/heldout.txt
LOW, HIGH = 0.85, 1.15  # the accepted range around a budget

SYSTEM = """You are a section writer on a team writing one article together. Write only the text of
your own section: no heading, no title, no notes to the editor. Write clear paragraphs of prose
for the article's readers, and do not repeat yourself."""


@dataclass
class SectionTask:
    key: str
    heading: str
    words: int
    goal: str = ""
    key_points: list[str] = field(default_factory=list)
    before: str = ""  # what the section before covers (its summary, or its goal)
    after: str = ""
    passages: list[str] = field(default_factory=list)  # cited as [1], [2], ... in this order
    instruction: str = ""  # a person's request when regenerating
    avoid: list[str] = field(default_factory=list)  # sibling sections' text: not to be repeated


# Asked between decode steps with the running requests as {request id: task key}; answers the
# request ids to stop. Callers look tasks up by key and never read the ids' format.
WriterCancel = Callable[[dict[str, str]], set[str]]


@dataclass(frozen=True)
class WriterOptions:
    """How the writers of one call write (the same for each of its sections)."""
    adapter: AdapterSpec | None = None
    temperature: float = 0.0  # greedy first candidates; above 0 every candidate is sampled
    seed: int = 0  # where the sampled candidates' seeds start
    # The defect kinds a candidate is refused for (all by default; repeats, unfinished sentences
    # and citations are always checked).
    filters: Collection[str] = quality.KINDS
    notes: bool = False  # a section with passages starts from notes on them (section_notes.py; bench/RESULTS.md)


DEFAULTS = WriterOptions()


@dataclass(frozen=True)
class WritingCall:
    """What every writer of one call shares: the engine, the brief and outline it writes to, and how."""
    engine: Engine
    brief: Brief
    outline_text: str
    options: WriterOptions = DEFAULTS



def shared_prefix(brief: Brief, outline_text: str) -> str:
    lines = [SYSTEM, "", f"The article: {brief.topic}", f"Readers: {brief.audience or 'general readers'}"]
    if brief.tone:
        lines.append(f"Tone: {brief.tone}")
    lines += [f"Language: {brief.language}", "", "The outline of the whole article:", outline_text]
    return "\n".join(lines)


def section_prompt(task: SectionTask) -> str:
    lines = [f"Write the section \"{task.heading}\" in about {task.words} words."]
    if task.goal:
        lines.append(f"Its goal: {task.goal}")
    if task.key_points:
        lines.append("Cover: " + "; ".join(task.key_points))
    if task.before:
        lines.append(f"The section before covers: {task.before}")
    if task.after:
        lines.append(f"The section after covers: {task.after}")
    if task.instruction:
        lines.append(f"The editor's instruction for this version: {task.instruction}")
    if task.passages:
        lines.append("Use these sources and cite them by number, like [1]:")
        lines += [f"[{i}] {passage}" for i, passage in enumerate(task.passages, start=1)]
    return "\n".join(lines)


def note_prompt(task: SectionTask, number: int) -> str:
    """What a writer is asked for its notes on passage `number` (section_notes.py)."""
    return (f"For the section \"{task.heading}\", retell this source in three or four sentences of your own, "
            f"for the article's readers. Say only what it says.\n\n[{number}] {task.passages[number - 1]}")


# The words of the prompt that are instructions, not subject (every part of the brief and the
# section left blank): a sentence sharing ECHO_N words in a row with them echoes the prompt.
_BLANK = SectionTask("", "", 0, goal=" ", key_points=[" "], before=" ", after=" ", instruction=" ", passages=[" "])
TEMPLATE = "\n".join([SYSTEM, "The article: \nReaders: \nTone: \nLanguage: \nThe outline of the whole article:",
                      section_prompt(_BLANK), note_prompt(_BLANK, 1)])


def messages(brief: Brief, outline_text: str, task: SectionTask) -> list[dict[str, str]]:
    """The chat the writer is given (each search step adds the sentences kept so far as the answer's start)."""
    return [{"role": "system", "content": shared_prefix(brief, outline_text)},
            {"role": "user", "content": section_prompt(task)}]


def context_bytes(brief: Brief, outline_text: str, task: SectionTask) -> int:
    """What this writer receives, in bytes: the compact context the pipeline reports per agent."""
    return len((shared_prefix(brief, outline_text) + section_prompt(task)).encode())



SENTENCE_END = re.compile(r"[.!?][\"')\]]*(?=\s|$)")


def word_count(text: str) -> int:
    return len(text.split())


ECHOES = re.compile(r"^\s*(#|(the article|readers|tone|language|the outline of the whole article|cover|its goal)\s*:)",
                    re.I)


LABEL = re.compile(r"^(?:\*\*)?[A-Z][A-Za-z]*(?: [A-Za-z]+){0,2}:(?:\*\*)?\s+(?=\S)")


def tidy(text: str, heading: str, checks: quality.Checks | None = None) -> str:
    """Drop headings, labels and prompt lines the model echoed, sentences it already wrote and,
    with `checks`, sentences with a defect (quality.py)."""
    if checks is not None:
        text = checks.clean(text)
    text = re.sub(r"\s*\(\d+ words\)", "", text)  # an echoed budget, often in the middle of real text
    lines = [line for line in text.strip().splitlines()
             if not ECHOES.search(line) and line.strip().strip("*:").lower() != heading.lower()
             and not (line.strip().endswith(":") and word_count(line) <= 5)]
    seen: set[str] = set()
    paragraphs = []
    for paragraph in re.split(r"\n\s*\n", "\n".join(lines)):
        kept = []
        for sentence in re.split(r"(?<=[.!?])\s+", paragraph.strip()):
            sentence = LABEL.sub("", sentence)  # "Background: Sleep is..." (an echoed outline label)
            normal = re.sub(r"\W+", " ", sentence.lower()).strip()
            if normal and normal in seen:
                continue
            seen.add(normal)
            kept.append(sentence)
        if kept:
            paragraphs.append(" ".join(kept))
    return "\n\n".join(paragraphs)


def fit(text: str, budget: int, cut_off: bool) -> str:
    """Cut at the last sentence end within HIGH x budget; drop an unfinished last sentence."""
    ends = [m.end() for m in SENTENCE_END.finditer(text)]
    if word_count(text) > HIGH * budget:
        inside = [end for end in ends if word_count(text[:end]) <= HIGH * budget]
        if inside and word_count(text[:inside[-1]]) >= LOW * budget:
            return text[:inside[-1]].strip()
        words = text.split()[:int(budget)]
        return " ".join(words).rstrip(",;:") + "."
    if cut_off and ends and ends[-1] < len(text.rstrip()):
        return text[:ends[-1]].strip()
    return text.strip()
