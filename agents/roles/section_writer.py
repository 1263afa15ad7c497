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
one run share an n-gram pool in the engine, so they do not repeat each other's phrases.

The prompts and the clean-up of answers are in section_text.py, the notes a section may start
from in section_notes.py."""

from __future__ import annotations

import math
import uuid
from collections.abc import Callable, Collection
from dataclasses import dataclass, field

from agents import citations, quality
from agents.llm.files import ModelFolderError
from agents.llm.types import AdapterSpec, Engine, GenerationRequest
from agents.outline import Brief
from agents.retrieval import default_embedder
from agents.roles.section_notes import write_notes
from agents.roles.section_text import (
    BLOCK_NGRAMS,
    HIGH,
    LOW,
    ROLE,
    TEMPLATE,
    TOKENS_PER_WORD,
    SectionTask,
    fit,
    messages,
    tidy,
    word_count,
)

__all__ = ["ROLE", "HIGH", "LOW", "TOKENS_PER_WORD", "SectionTask", "WrittenSection", "messages", "tidy", "fit",
           "word_count", "write_sections", "writer_instructions", "checks_for", "WriterCancel"]


@dataclass
class WrittenSection:
    key: str
    text: str
    words: int
    rounds: int
    finish: str  # "ok", "short" (still under 85% after the last round) or "cancelled"
    cut: list[tuple[str, str]] = field(default_factory=list)  # (defect, sentence) cut while streaming


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


MIN_KEPT = 0.25  # a continuation asks for at most 4x the words still missing


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
    (section_notes.py). Off by default: notes raised cited sentences from 27% to 34% on five
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
        noted, cancelled = write_notes(engine, brief, outline_text, fresh, checks, adapter, pool, check, temperature,
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
