"""The section writer: writes one leaf section of the outline to its word budget.

All sections of a batch go to the engine together. The brief and the outline come first in every
prompt, so the engine computes them once for the whole batch (shared prefix); each writer then
gets its own heading, goal, key points, its neighbours' summaries and its source passages.

Length following: each request may produce about 115% of its budget in tokens. A section that
stops short of 85% is continued (its draft becomes the start of the next answer), a section that
runs long is cut at the last sentence end inside the budget, and an unfinished last sentence is
dropped. Repeated sentences, a habit of small models, are removed before words are counted.

What a reader would not keep is cut as it streams (agents/quality.py: echoes of the prompt, talk
about the writing, junk words and fragments, sentences off the brief), a sentence at a time, and
the writing goes on; a continuation asks for more by the share the filter kept. Citations are
kept or attached only where the passage supports the sentence (agents/citations.py). Writers of
one run share an n-gram pool in the engine, so they do not repeat each other's phrases."""

from __future__ import annotations

import math
import re
import uuid
from collections.abc import Callable, Collection
from dataclasses import dataclass, field

from agents import citations, quality
from agents.llm.files import ModelFolderError
from agents.llm.types import AdapterSpec, Engine, GenerationRequest
from agents.outline import Brief
from agents.retrieval import default_embedder

ROLE = "writer"
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


@dataclass
class WrittenSection:
    key: str
    text: str
    words: int
    rounds: int
    finish: str  # "ok", "short" (still under 85% after the last round) or "cancelled"
    cut: list[tuple[str, str]] = field(default_factory=list)  # (defect, sentence) cut while streaming


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
    """What a writer is asked for its notes on passage `number` (see _notes)."""
    return (f"For the section \"{task.heading}\", retell this source in three or four sentences of your own, "
            f"for the article's readers. Say only what it says.\n\n[{number}] {task.passages[number - 1]}")


# The words of the prompt that are instructions, not subject (every part of the brief and the
# section left blank): a sentence sharing ECHO_N words in a row with them echoes the prompt.
_BLANK = SectionTask("", "", 0, goal=" ", key_points=[" "], before=" ", after=" ", instruction=" ", passages=[" "])
TEMPLATE = "\n".join([SYSTEM, "The article: \nReaders: \nTone: \nLanguage: \nThe outline of the whole article:",
                      section_prompt(_BLANK), note_prompt(_BLANK, 1)])


def messages(brief: Brief, outline_text: str, task: SectionTask) -> list[dict[str, str]]:
    """The chat the writer is given (a continuation round adds its draft as the answer's start)."""
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


def writer_instructions(brief: Brief, headings: list[str]) -> quality.Instructions:
    """What every writer is told, less the subject's own names: for scoring finished articles."""
    return quality.Instructions.of(TEMPLATE, [brief.topic, brief.notes, brief.audience, *headings])


def checks_for(brief: Brief, outline_text: str, task: SectionTask,
               filters: Collection[str] = quality.KINDS) -> quality.Checks:
    """What this writer's sentences are judged against: the instructions it was given (echoes),
    and the words the brief, the outline, its task and its sources allow beyond the lexicon."""
    subject = [brief.topic, brief.notes, brief.audience, brief.tone, outline_text, task.heading, task.goal,
               task.before, task.after, task.instruction, *task.key_points, *task.passages]
    try:
        lexicon: quality.Lexicon | None = quality.default_lexicon()
    except Exception:  # noqa: BLE001  (no word list here: junk words go unchecked, the rest still runs)
        lexicon = None
    cite = on_brief = None
    if task.passages or "off-brief" in filters:
        try:
            embed = default_embedder().embed
        except ModelFolderError:  # no embedding model installed: no citation or off-brief checks
            embed = None
        if embed is not None and task.passages:
            cite = citations.Support(task.passages, embed).cite
        if embed is not None and "off-brief" in filters:
            on_brief = quality.OnBrief([f"{brief.topic}. {brief.notes}".strip(". "), f"{task.heading}. {task.goal}"],
                                       embed)
    return quality.Checks(quality.Instructions.of(TEMPLATE, subject), lexicon, quality.allowed_words(*subject), cite,
                          on_brief, frozenset(filters))


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


MIN_KEPT = 0.25  # a continuation asks for at most 4x the words still missing
BLOCK_NGRAMS = 4  # writers of one run may not repeat each other's token 4-grams


def _request(brief: Brief, outline_text: str, task: SectionTask, draft: str,
             adapter: AdapterSpec | None, pool: str, temperature: float = 0.0, seed: int = 0,
             kept: float = 1.0) -> GenerationRequest:
    """`kept`: the share of its words the filter kept in the section's last round; a continuation
    asks for that much more, so a section whose sentences are often cut still reaches its budget."""
    remaining = max(20, task.words - word_count(draft)) / max(MIN_KEPT, kept)
    return GenerationRequest(
        id=f"{ROLE}-{task.key}-{uuid.uuid4().hex[:6]}", adapter=adapter,
        messages=messages(brief, outline_text, task),
        # The draft without its citation marks: shown its notes' "[1]"s, the model goes on writing
        # lists of numbers (seen: 30 sentences cut in one section); marks are put back by support.
        assistant_prefix=(citations.MARK.sub("", draft) + "\n\n") if draft else "",
        # Room to finish the sentence under way: fit() cuts anything past the budget at a sentence
        # end, but a continuation that stops mid-sentence would lose its only sentence.
        max_new_tokens=math.ceil(remaining * HIGH * TOKENS_PER_WORD) + 40,
        # Small models like to stop early; the end token only becomes possible near the budget.
        min_new_tokens=math.floor(remaining * LOW * TOKENS_PER_WORD),
        repetition_penalty=1.15,
        block_ngrams=BLOCK_NGRAMS, ngram_pool=pool, avoid=tuple(task.avoid), temperature=temperature, seed=seed,
        top_p=0.95 if temperature else 1.0,
    )


# --- notes from the sources -------------------------------------------------------------------
# A small model given passages and asked for a section uses a sentence or two of them and then
# writes from what it knows (little, and often wrong): a quarter of its sentences had a passage
# that supports them. So a section with sources starts from notes: each passage is retold in a few
# sentences of the writer's own first (all in one batch), the sentences a passage supports (the
# citation check) and the filter keeps become the section's draft, and the writer goes on from
# there in its own words, as a person writes from notes.

NOTES_SHARE = 0.6  # the notes fill at most this share of a section's budget; the writer writes the rest
NOTE_WORDS = 90  # the words asked of one passage's retelling
NOTES_GROUND_BIAS = 1.0  # logit bias towards the passage's own phrases (engine: ground_bias)
NOTE_OVERLAP = 0.5  # share of a note's 4-grams already noted (or written) that makes it a repeat


def note_assignments(tasks: list[SectionTask]) -> dict[str, list[int]]:
    """Which passages each section retells (numbers from 1): a passage given to several sections
    is retold only by the one that ranks it highest (ties: the earlier section), so two sections
    do not start from the same facts."""
    best: dict[str, tuple[int, int]] = {}
    for order, task in enumerate(tasks):
        for rank, passage in enumerate(task.passages):
            if passage not in best or rank < best[passage][0]:
                best[passage] = (rank, order)
    return {task.key: [rank + 1 for rank, passage in enumerate(task.passages) if best[passage] == (rank, order)]
            for order, task in enumerate(tasks)}


def _notes(engine: Engine, brief: Brief, outline_text: str, tasks: list[SectionTask], checks: dict[str, quality.Checks],
           adapter: AdapterSpec | None, pool: str, cancel, temperature: float, seed: int,
           cut: dict[str, list[tuple[str, str]]], key_of: dict[str, str]) -> tuple[dict[str, str], set[str]]:
    """Each section's notes: of each passage it retells, the sentences that passed the filter and
    cite a passage that supports them (agents/citations.py), a paragraph per passage, up to
    NOTES_SHARE of its budget. Also the keys of the sections cancelled meanwhile."""
    batch, owner = [], {}
    assigned = note_assignments(tasks)
    for index, task in enumerate(tasks):
        for number in assigned[task.key]:
            request = GenerationRequest(
                id=f"{ROLE}-{task.key}-note{number}-{uuid.uuid4().hex[:6]}", adapter=adapter,
                messages=[{"role": "system", "content": shared_prefix(brief, outline_text)},
                          {"role": "user", "content": note_prompt(task, number)}],
                max_new_tokens=math.ceil(NOTE_WORDS * HIGH * TOKENS_PER_WORD) + 20,
                min_new_tokens=math.floor(NOTE_WORDS * 0.5 * TOKENS_PER_WORD), repetition_penalty=1.15,
                block_ngrams=BLOCK_NGRAMS, ngram_pool=pool, avoid=tuple(task.avoid),
                ground=(task.passages[number - 1],), ground_bias=NOTES_GROUND_BIAS, temperature=temperature,
                seed=seed + 1000 + index * 10 + number, top_p=0.95 if temperature else 1.0)
            batch.append(request)
            owner[request.id], key_of[request.id] = (task, number), task.key
    if not batch:
        return {}, set()
    text = {request.id: "" for request in batch}
    cancelled: set[str] = set()
    for delta in engine.stream(batch, cancel=cancel):
        text[delta.request_id] += delta.text
        if delta.finished and delta.finish_reason == "error":
            raise RuntimeError(f"notes for “{owner[delta.request_id][0].heading}” failed: {delta.error}")
        if delta.finished and delta.finish_reason == "cancelled":
            cancelled.add(owner[delta.request_id][0].key)
    notes: dict[str, list[str]] = {task.key: [] for task in tasks}
    # Passages overlap (sources are cut into overlapping chunks) and sections may have been
    # written before: a note mostly made of 4-grams already noted or written is a repeat.
    said = {gram for task in tasks for text in task.avoid for gram in quality.four_grams(text)}
    for request in batch:
        task, number = owner[request.id]
        kept = []
        for sentence in quality.sentences(tidy(text[request.id], task.heading)):
            kind = checks[task.key].defect(sentence)
            shown = checks[task.key].keep(sentence) if kind is None else ""
            grams = quality.four_grams(citations.plain(sentence))
            if kind is None and not citations.MARK.search(shown):
                kind = "unsupported"  # a note says what a source says, or it is no note
            elif kind is None and grams and sum(gram in said for gram in grams) > NOTE_OVERLAP * len(grams):
                kind = "repeat"
            if kind is None:
                kept.append(shown)
                said.update(grams)
            else:
                cut[task.key].append((kind, sentence))
        if kept:
            notes[task.key].append(" ".join(kept))
    drafts = {}
    for task in tasks:
        paragraphs, words = [], 0
        for paragraph in notes[task.key]:
            if words + word_count(paragraph) > NOTES_SHARE * task.words:
                break
            paragraphs.append(paragraph)
            words += word_count(paragraph)
        if paragraphs and task.key not in cancelled:
            drafts[task.key] = "\n\n".join(paragraphs)
    return drafts, cancelled


# Asked between decode steps with the running requests as {request id: task key}; answers the
# request ids to stop. Callers look tasks up by key and never read the ids' format.
WriterCancel = Callable[[dict[str, str]], set[str]]


def write_sections(engine: Engine, brief: Brief, outline_text: str, tasks: list[SectionTask],
                   adapter: AdapterSpec | None = None, on_text: Callable[[str, str], None] | None = None,
                   cancel: WriterCancel | None = None, max_rounds: int = 5,
                   drafts: dict[str, str] | None = None, pool: str = "", temperature: float = 0.0,
                   seed: int = 0, filters: Collection[str] = quality.KINDS,
                   notes: bool = False) -> dict[str, WrittenSection]:
    """Write every task as one batch, with continuation rounds for those that fall short.
    `on_text(key, new_text)` is called for every token, with the text that may be shown: a
    sentence goes out once it is finished and free of defects (echoes of the prompt, talk about
    the writing, junk words); one that is not is cut and the writing goes on. `drafts` resumes
    sections from text already written (a checkpoint of an interrupted run). Writers sharing
    `pool` (a run) do not repeat each other's 4-grams. Greedy unless a `temperature` is given
    (self-training samples several candidates with seeds). `filters` are the defect kinds cut
    (all by default; citations are checked whenever there are passages). With `notes`, a
    section with passages (and the embedding model to check support) starts from notes on them
    (see _notes above). Off by default: notes raised cited sentences from 27% to 34% on five
    briefs, but a section continued from notes often went to five rounds, and one brief took
    3x as long to write (bench/RESULTS.md)."""
    pool = pool or f"writers-{uuid.uuid4().hex[:8]}"
    checks = {task.key: checks_for(brief, outline_text, task, filters) for task in tasks}
    key_of: dict[str, str] = {}  # every request of this call -> its task's key
    check = None
    if cancel is not None:
        asked = cancel

        def check(active: list[str]) -> set[str]:
            return asked({request_id: key_of[request_id] for request_id in active if request_id in key_of})

    # A checkpoint may stop mid-sentence: continue from its last full sentence.
    drafts = {task.key: fit(tidy((drafts or {}).get(task.key, ""), task.heading, checks[task.key]), task.words,
                            cut_off=True)
              for task in tasks}
    cut: dict[str, list[tuple[str, str]]] = {task.key: [] for task in tasks}
    # Sections with sources and nothing written yet start from notes on their passages.
    fresh = [task for task in tasks if task.passages and not drafts[task.key] and checks[task.key].cite is not None]
    results: dict[str, WrittenSection] = {}
    if fresh and notes:
        noted, cancelled = _notes(engine, brief, outline_text, fresh, checks, adapter, pool, check, temperature,
                                  seed, cut, key_of)
        for key, note in noted.items():
            drafts[key] = note
            if on_text:
                on_text(key, note + "\n\n")
        for key in cancelled:
            results[key] = WrittenSection(key, "", 0, 1, "cancelled", cut[key])
    kept_share: dict[str, float] = {}
    pending = [task for task in tasks if task.key not in results]
    for round_number in range(1, max_rounds + 1):
        if not pending:
            break
        # Siblings' text from earlier rounds (their notes, or a whole section that finished) has
        # left the engine's pool with its requests: it is given as text to avoid.
        if any(drafts.values()):
            for t in pending:
                t.avoid = list(dict.fromkeys(t.avoid + [drafts[other.key] for other in tasks
                                                        if other.key != t.key and drafts[other.key]]))
        batch = [_request(brief, outline_text, t, drafts[t.key], adapter, pool, temperature, seed + index,
                          kept_share.get(t.key, 1.0))
                 for index, t in enumerate(pending)]
        task_of = {request.id: task for request, task in zip(batch, pending, strict=True)}
        key_of.update({request_id: task.key for request_id, task in task_of.items()})
        new_text = {t.key: "" for t in pending}
        raw_words = {t.key: 0 for t in pending}
        gates = {t.key: quality.SentenceGate(checks[t.key]) for t in pending}
        reasons: dict[str, str] = {}
        for delta in engine.stream(batch, cancel=check):
            task = task_of[delta.request_id]
            gate = gates[task.key]
            shown = gate.feed(delta.text) + (gate.close() if delta.finished else "")
            new_text[task.key] += shown
            raw_words[task.key] += delta.text.count(" ") + delta.text.count("\n")
            if on_text and (delta.text or shown):
                on_text(task.key, shown)
            if delta.finished:
                cut[task.key] += gate.cut
                reasons[task.key] = delta.finish_reason or "stop"
                if delta.finish_reason == "error":
                    raise RuntimeError(f"writing “{task.heading}” failed: {delta.error}")
        still_short = []
        for task in pending:
            if raw_words[task.key]:
                kept_share[task.key] = min(1.0, word_count(new_text[task.key]) / raw_words[task.key])
            joined = (drafts[task.key] + "\n\n" + new_text[task.key]) if drafts[task.key] else new_text[task.key]
            text = checks[task.key].recite(fit(tidy(joined, task.heading, checks[task.key]), task.words,
                                               cut_off=reasons.get(task.key) == "length"))
            drafts[task.key] = text
            if reasons.get(task.key) == "cancelled":
                results[task.key] = WrittenSection(task.key, text, word_count(text), round_number, "cancelled",
                                                   cut[task.key])
            elif word_count(text) >= LOW * task.words or round_number == max_rounds:
                finish = "ok" if word_count(text) >= LOW * task.words else "short"
                results[task.key] = WrittenSection(task.key, text, word_count(text), round_number, finish,
                                                   cut[task.key])
            else:
                still_short.append(task)
        pending = still_short
    return results
