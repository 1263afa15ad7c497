"""The writer's sentence search: the kept sentence is the best-scored candidate without a
defect, a step whose candidates all fail is searched again with sampled rows, a writer that can
only repeat itself stops at its last good sentence, siblings' text is blocked, each section is
handed back the moment it is done, and on the real transformers code the candidates of a step
share their prefix through the prefix cache."""

from __future__ import annotations

import dataclasses
import threading

from agents.llm.transformers_backend import TransformersEngine
from agents.llm.types import Delta
from agents.outline import Brief
from agents.roles import sentence_search
from agents.roles.section_writer import SectionTask, WriterHooks, WriterOptions, write_sections

BRIEF = Brief(topic="How tides work", target_words=120, audience="walkers")
OUTLINE = "1. The pull of the moon (60 words)\n2. Tides on the shore (60 words)"


class Candidates:
    """An engine whose candidate i of every step answers `script(step, i)`, with a log-probability
    per word of `likelihood(step, i)`; it keeps each step's requests."""

    def __init__(self, script, likelihood=lambda step, i: -1.0):
        self.script, self.likelihood = script, likelihood
        self.steps: list[list] = []
        self._lock = threading.Lock()  # sections step on threads of their own

    def stream(self, requests, cancel=None):
        batch = list(requests)
        with self._lock:
            self.steps.append(batch)
            step = len(self.steps) - 1
        for index, request in enumerate(batch):
            text = self.script(step, index)
            words = max(1, len(text.split()))
            yield Delta(request.id, text, finished=True, finish_reason="stop", completion_tokens=words,
                        logprob=self.likelihood(step, index) * words)


TIDES = ["The moon pulls the sea toward it, raising a bulge of water.",
         "Most coasts see two high tides and two low tides each day.",
         "Spring tides come when the sun and moon line up.",
         "Neap tides, a week later, have the smallest range.",
         "Crabs and snails wait out low water under wet seaweed.",
         "The Bay of Fundy has some of the highest tides on Earth.",
         "Harbour masters publish tide tables a year ahead.",
         "Tidal currents can run faster than a person can swim.",
         "Mud flats uncovered at low tide feed thousands of wading birds.",
         "Sailors once timed their departures to the ebbing tide.",
         "Tidal power stations turn the rising water into electricity.",
         "Rock pools hold small worlds of anemones and shrimp.",
         "Storm surges are worst when they arrive with a spring tide.",
         "Some rivers carry a tidal bore many miles inland.",
         "Seagrass meadows flood and drain with every tide.",
         "Walkers crossing sands to islands must watch the tide times."]


def _moon(step: int, index: int) -> str:
    return " " + TIDES[(step * 3 + index) % len(TIDES)]


def test_the_kept_sentence_is_the_best_scored_candidate_and_streams_alone(monkeypatch):
    scored: list[list[sentence_search.Candidate]] = []
    judge = sentence_search.Judge.judge

    def spy(self, search, candidates):
        judge(self, search, candidates)
        scored.append([dataclasses.replace(c)
                       for c in candidates])

    monkeypatch.setattr(sentence_search.Judge, "judge", spy)
    # Candidate 1 is the likeliest by far; candidate 2 talks about the writing.
    engine = Candidates(lambda step, i: " In this section we will look at tides." if i == 2 else _moon(step, i),
                        likelihood=lambda step, i: -0.2 if i == 1 else -3.0)
    shown: list[str] = []
    written = write_sections(engine, BRIEF, OUTLINE, [SectionTask("a", "The pull of the moon", 60,
                                                                  "Explain how the moon raises tides.")],
                             hooks=WriterHooks(on_text=lambda key, text: shown.append(text)))["a"]
    assert any(len(step) > 1 for step in engine.steps)  # the allowance bought more than one candidate
    kept = [s.strip() for s in shown]
    for step, text in zip(scored, kept, strict=False):
        best = max((c for c in step if c.defect is None), key=lambda c: c.score)
        assert best.sentence == text
    assert all("In this section" not in text for text in kept)
    assert ("meta", "In this section we will look at tides.") in written.cut
    assert written.text == " ".join(kept)


def test_a_step_whose_candidates_all_fail_is_searched_again_with_sampled_rows():
    engine = Candidates(lambda step, i: " I hope this helps you with your article." if step == 1 else _moon(step, i))
    written = write_sections(engine, BRIEF, OUTLINE, [SectionTask("a", "The pull of the moon", 40)])["a"]
    assert "I hope this helps" not in written.text and written.finish == "ok"
    again = engine.steps[2]  # the step after the failed one asks the same position again
    assert again[0].assistant_prefix == engine.steps[1][0].assistant_prefix
    assert all(request.temperature > 0 for request in again)


def test_a_writer_that_can_only_repeat_itself_stops_at_its_last_good_sentence():
    engine = Candidates(lambda step, i: " The moon pulls the sea toward it every day.")
    refused: list[tuple[str, int, str]] = []
    written = write_sections(engine, BRIEF, OUTLINE, [SectionTask("a", "The pull of the moon", 100)],
                             hooks=WriterHooks(on_refused=lambda key, *why: refused.append((key, *why))))["a"]
    assert written.text == "The moon pulls the sea toward it every day."
    assert written.finish == "short" and len(engine.steps) == 1 + sentence_search.MAX_FAILS
    assert all(kind == "repeat" for kind, _ in written.cut)
    # Issue 25: each refused step is reported as it happens (the page says "Revising", and why).
    assert refused == [("a", tries, "repeat") for tries in range(1, sentence_search.MAX_FAILS + 1)]


def test_siblings_text_is_avoided_and_each_section_is_handed_back_when_done():
    def script(step, index):
        return _moon(step, index)
    engine = Candidates(script)
    handed: list[str] = []
    tasks = [SectionTask("short", "The pull of the moon", 20), SectionTask("long", "Tides on the shore", 80)]
    results = write_sections(engine, BRIEF, OUTLINE, tasks,
                             hooks=WriterHooks(on_done=lambda written: handed.append(written.key)))
    assert handed == ["short", "long"] and set(results) == {"short", "long"}
    later = [request for step in engine.steps for request in step if request.id.startswith("writer-long")][-1]
    assert any(results["short"].text in text for text in later.avoid)
    assert later.block_ngrams == sentence_search.BLOCK_NGRAMS and later.no_repeat_ngrams == sentence_search.OWN_NGRAMS


def test_candidates_of_a_step_share_their_prefix_on_the_real_engine(tiny_model_dir):
    engine = TransformersEngine(tiny_model_dir, dtype="float32")
    try:
        written = write_sections(engine, BRIEF, OUTLINE, [SectionTask("a", "The pull of the moon", 60)],
                                 options=WriterOptions(filters=()))["a"]
        stats, prefixes = engine.core.stats, engine.core.prefixes
    finally:
        engine.close()
    assert written.words >= 0.85 * 60 and written.tokens > 0
    # Every step after the first reuses the prompt and the sentences before it: prefill computed
    # a small share of the prompt tokens the steps asked for.
    assert prefixes.hits >= written.rounds - 1
    assert stats.prefill_tokens < 0.5 * stats.prompt_tokens


def test_the_allowance_sets_the_width():
    search = sentence_search.Search(SectionTask("a", "A", 150), checks=None)  # type: ignore[arg-type]
    search.draft = "The moon pulls the sea. " * 15  # 75 of 150 words, nothing spent: room to search wide
    assert search.width() == sentence_search.MAX_WIDTH
    search.generated = int(sentence_search.TOKENS_PER_KEPT_WORD * 150)  # all spent: one candidate a step
    assert search.width() == 1


def test_a_long_section_shows_each_step_a_window_of_its_draft_that_moves_in_jumps():
    search = sentence_search.Search(SectionTask("a", "A", 2000), checks=None)  # type: ignore[arg-type]
    sentences = [f"Sentence number {i} of the long section says one more thing." for i in range(150)]
    shown = []
    for sentence in sentences:
        search.draft += (" " if search.draft else "") + sentence
        shown.append(search.window())
    limit = 2 * sentence_search.DRAFT_WINDOW
    assert all(len(window.split()) <= limit + 10 for window in shown)
    assert shown[-1].startswith("Sentence number") and search.draft.endswith(shown[-1])
    starts = {search.draft.index(window) for window in shown}
    assert 1 < len(starts) < 10  # the window moved, a few times, not at every step


def test_a_section_longer_than_the_tiny_models_context_is_written_without_an_error(tiny_model_dir):
    """The tiny model's context is 2,048 tokens; a 1,400-word section of its run-on text would
    need more than that if every step were shown the whole draft."""
    engine = TransformersEngine(tiny_model_dir, dtype="float32")
    try:
        written = write_sections(engine, BRIEF, OUTLINE, [SectionTask("a", "The pull of the moon", 1400)],
                                 options=WriterOptions(filters=()))["a"]
    finally:
        engine.close()
    assert written.words >= 0.85 * 1400 and written.finish == "ok"


def test_a_section_handed_back_ends_as_a_sentence_even_with_the_filter_off():
    """With the filter off (to judge a model by itself) a run-on candidate may be kept; the text
    handed back still ends a sentence, so a sentence a person appends stays one (the reviewer
    reads sentences)."""
    engine = Candidates(lambda step, i: " gulls nest on roofs and harbour walls and then" if step < 3 else "")
    written = write_sections(engine, BRIEF, OUTLINE, [SectionTask("a", "Gulls", 20)],
                             options=WriterOptions(filters=()))["a"]
    assert written.text.endswith("and then.")


def _checked_search(words: int = 120) -> sentence_search.Search:
    from agents import quality

    checks = quality.Checks(instructions=quality.Instructions.of("Write about how tides work. Readers: walkers."),
                            lexicon=quality.Lexicon(["the", "moon", "pulls", "sea", "in", "this", "section", "we",
                                                     "will", "look", "at", "tides", "and", "water"]))
    return sentence_search.Search(SectionTask("a", "The pull of the moon", words), checks=checks)


def test_a_candidate_is_doomed_only_by_what_its_finished_words_already_hold():
    search = _checked_search()
    assert search.doomed(" The moon pulls the sea") is None
    assert search.doomed(" The moon pulls the sea in this section") is None  # "section" may go on ("sectional")
    assert search.doomed(" The moon pulls the sea in this section we") == "meta"
    assert search.doomed(" The moon pulls the blorptastic") is None  # a word still being written
    assert search.doomed(" The moon pulls the blorptastic sea") == "junk"
    search.checks.kinds = frozenset({"echo"})  # the filter off for meta and junk: never doomed for them
    assert search.doomed(" The moon pulls the blorptastic sea in this section we") is None


def test_a_doomed_candidate_stops_under_way_on_the_real_engine_and_is_refused_for_its_defect(tiny_model_dir):
    """The tiny model writes nonsense: a row is stopped once three words are out, its delta says
    why, and it cost fewer tokens than a row left to the end."""
    from agents.llm.types import GenerationRequest
    from agents.roles.section_writer import Steps

    engine = TransformersEngine(tiny_model_dir, dtype="float32")
    try:
        steps = Steps(engine)
        ask = [GenerationRequest(id=f"r{i}", messages=[{"role": "user", "content": "Tides."}], max_new_tokens=200,
                                 min_new_tokens=200, seed=i, temperature=0.8) for i in range(2)]
        steps.start("a", ask[:1], lambda text: "junk" if len(text.split()) >= 3 else None)
        stopped = steps.next_finished(timeout=120)
        steps.start("b", ask[1:])
        whole = steps.next_finished(timeout=120)
        steps.close()
    finally:
        engine.close()
    assert stopped is not None and whole is not None
    last = [d for d in stopped[1] if d.finished][0]
    assert last.finish_reason == "refused:junk" and last.completion_tokens < 200
    assert [d for d in whole[1] if d.finished][0].completion_tokens == 200
    candidate = sentence_search.candidates_of(stopped[1])[0]
    assert sentence_search.Judge._defect(_checked_search(), candidate, set()) == "junk"
