"""Notes from the sources, before a section is written (off by default: see
section_writer.write_sections for what they cost and bring)."""

from __future__ import annotations

import math
import uuid
from dataclasses import dataclass, field

from agents import citations, quality
from agents.llm.types import GenerationRequest
from agents.roles.section_text import (
    BLOCK_NGRAMS,
    HIGH,
    ROLE,
    TOKENS_PER_WORD,
    SectionTask,
    WriterCancel,
    WritingCall,
    note_prompt,
    shared_prefix,
    tidy,
    word_count,
)

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


@dataclass
class Notes:
    drafts: dict[str, str]  # section key -> the notes it starts from (sections with none left out)
    cancelled: set[str]  # the sections cancelled meanwhile
    cut: dict[str, list[tuple[str, str]]] = field(default_factory=dict)  # key -> (defect, sentence) refused


def write_notes(call: WritingCall, tasks: list[SectionTask], checks: dict[str, quality.Checks],
                cancel: WriterCancel | None = None) -> Notes:
    """Each section's notes: of each passage it retells, the sentences that passed the filter and
    cite a passage that supports them (agents/citations.py), a paragraph per passage, up to
    NOTES_SHARE of its budget."""
    owner = _note_requests(call, tasks)
    if not owner:
        return Notes({}, set())
    check = None
    if cancel is not None:
        def check(active: list[str]) -> set[str]:
            return cancel({request_id: owner[request_id][1].key for request_id in active if request_id in owner})
    text = {request_id: "" for request_id in owner}
    cancelled: set[str] = set()
    for delta in call.engine.stream([request for request, _, _ in owner.values()], cancel=check):
        text[delta.request_id] += delta.text
        task = owner[delta.request_id][1]
        if delta.finished and delta.finish_reason == "error":
            raise RuntimeError(f"notes for “{task.heading}” failed: {delta.error}")
        if delta.finished and delta.finish_reason == "cancelled":
            cancelled.add(task.key)
    cut: dict[str, list[tuple[str, str]]] = {task.key: [] for task in tasks}
    notes = _kept_notes(tasks, owner, text, checks, cut)
    drafts = {task.key: _within_share(notes[task.key], task.words) for task in tasks if task.key not in cancelled}
    return Notes({key: draft for key, draft in drafts.items() if draft}, cancelled, cut)


def _note_requests(call: WritingCall,
                   tasks: list[SectionTask]) -> dict[str, tuple[GenerationRequest, SectionTask, int]]:
    """request id -> (the request retelling passage n, its section, n), one per passage a section
    retells (note_assignments)."""
    owner = {}
    assigned = note_assignments(tasks)
    pool = f"notes-{uuid.uuid4().hex[:8]}"  # one section's notes may not repeat another's phrases
    temperature, seed = call.options.temperature, call.options.seed
    for index, task in enumerate(tasks):
        for number in assigned[task.key]:
            request = GenerationRequest(
                id=f"{ROLE}-{task.key}-note{number}-{uuid.uuid4().hex[:6]}", adapter=call.options.adapter,
                messages=[{"role": "system", "content": shared_prefix(call.brief, call.outline_text)},
                          {"role": "user", "content": note_prompt(task, number)}],
                max_new_tokens=math.ceil(NOTE_WORDS * HIGH * TOKENS_PER_WORD) + 20,
                min_new_tokens=math.floor(NOTE_WORDS * 0.5 * TOKENS_PER_WORD), repetition_penalty=1.15,
                block_ngrams=BLOCK_NGRAMS, ngram_pool=pool, avoid=tuple(task.avoid),
                ground=(task.passages[number - 1],), ground_bias=NOTES_GROUND_BIAS, temperature=temperature,
                seed=seed + 1000 + index * 10 + number, top_p=0.95 if temperature else 1.0)
            owner[request.id] = (request, task, number)
    return owner


def _kept_notes(tasks: list[SectionTask], owner: dict[str, tuple[GenerationRequest, SectionTask, int]],
                text: dict[str, str], checks: dict[str, quality.Checks],
                cut: dict[str, list[tuple[str, str]]]) -> dict[str, list[str]]:
    """Per section, a paragraph per passage of the note sentences that pass the filter, cite a
    passage that supports them and repeat no earlier note; what is refused goes to `cut`."""
    notes: dict[str, list[str]] = {task.key: [] for task in tasks}
    # Passages overlap (sources are cut into overlapping chunks) and sections may have been
    # written before: a note mostly made of 4-grams already noted or written is a repeat.
    said = {gram for task in tasks for written in task.avoid for gram in quality.four_grams(written)}
    for request_id, (_, task, _) in owner.items():
        kept = []
        for sentence in quality.sentences(tidy(text[request_id], task.heading)):
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
    return notes


def _within_share(paragraphs: list[str], budget: int) -> str:
    """The first paragraphs that fit in NOTES_SHARE of the section's budget."""
    kept, words = [], 0
    for paragraph in paragraphs:
        if words + word_count(paragraph) > NOTES_SHARE * budget:
            break
        kept.append(paragraph)
        words += word_count(paragraph)
    return "\n\n".join(kept)
