"""Section writers end within 15% of their budgets, a chosen sentence at a time; a checkpoint is
cut at its last sentence end and continued. On scripted answers for the mechanics and on the
bundled model for the real thing (tests/test_sentence_search.py tests the search itself)."""

from __future__ import annotations

import pytest

from agents.llm.types import GenerationRequest
from agents.outline import Brief
from agents.roles.section_writer import SectionTask, WriterHooks, fit, tidy, word_count, write_sections
from tests.support.fakes import ScriptedEngine
from tests.support.tiny_models import BUNDLED_TEXT_DIVERGES

BRIEF = Brief(topic="How the printing press changed Europe", target_words=370, audience="curious readers")
OUTLINE = "1. Before the press (120 words)\n2. Gutenberg's workshop (250 words)"
PRINTING = ["Gutenberg cast letters from an alloy of lead, tin and antimony.",
            "His press borrowed its screw from the wine presses of the Rhineland.",
            "An oil-based ink clung to metal type far better than the inks of scribes.",
            "The Bible he printed in Mainz ran to about 180 copies.",
            "Paper mills in Italy and Germany could now sell far more of their sheets.",
            "Within fifty years presses were working in more than two hundred European towns.",
            "Pamphlets spread news of disputes and discoveries faster than any courier.",
            "Booksellers began to print catalogues of the titles they could supply.",
            "Scholars compared identical copies of a text for the first time.",
            "Cheaper books meant that more merchants and craftsmen learned to read.",
            "Latin slowly lost ground to books printed in the languages people spoke.",
            "Printers also became editors, choosing what was worth setting in type."]


def test_fit_cuts_long_text_at_a_sentence_end_inside_the_budget():
    text = " ".join(f"Sentence {i} has exactly six words." for i in range(40))  # 240 words
    cut = fit(text, 100, cut_off=False)
    assert cut.endswith(".") and 85 <= word_count(cut) <= 115


def test_fit_drops_an_unfinished_last_sentence():
    assert fit("One full sentence here. And then the model ran out of", 10, cut_off=True) == "One full sentence here."


def test_an_echoed_budget_is_cut_out_without_losing_the_paragraph_it_is_in():
    text = "Sleep matters (125 words) because the body repairs itself at night. It also sorts memories."
    assert tidy(text, "Why sleep") == "Sleep matters because the body repairs itself at night. It also sorts memories."


def test_tidy_drops_echoed_prompt_lines_headings_and_repeated_sentences():
    text = ("The article: Printing\nReaders: everyone\n## Gutenberg\nIntroduction:\nMetal type was new. "
            "It changed books.\n\nMetal type was new. Ink mattered too.")
    assert tidy(text, "Gutenberg") == "Metal type was new. It changed books.\n\nInk mattered too."


@pytest.mark.bundled
def test_min_new_tokens_keeps_the_bundled_model_from_stopping_early(bundled_engine):
    engine = bundled_engine
    ask = [{"role": "user", "content": "Say hello."}]
    free = list(engine.stream([GenerationRequest(id="a", messages=ask, max_new_tokens=60)]))[-1]
    held = list(engine.stream([GenerationRequest(id="b", messages=ask, max_new_tokens=60, min_new_tokens=40)]))[-1]
    assert free.completion_tokens < 40 <= held.completion_tokens


@pytest.mark.bundled
@BUNDLED_TEXT_DIVERGES
def test_the_bundled_model_writes_each_section_within_15_percent(bundled_engine):
    engine = bundled_engine
    tasks = [SectionTask("a", "Before the press", 120, "Show how books were copied by hand before 1450.",
                         after="Gutenberg's workshop"),
             SectionTask("b", "Gutenberg's workshop", 250, "Explain movable type, the press and the ink.",
                         before="Before the press")]
    results = write_sections(engine, BRIEF, OUTLINE, tasks)
    for task in tasks:
        written = results[task.key]
        assert 0.85 * task.words <= written.words <= 1.15 * task.words, (task.heading, written.words)
        assert "The article:" not in written.text and not written.text.startswith("#")


def test_streamed_text_reaches_the_callback_a_kept_sentence_at_a_time():
    seen = []
    engine = ScriptedEngine(" ".join(PRINTING))
    write_sections(engine, BRIEF, OUTLINE, [SectionTask("a", "A", 100)],
                   hooks=WriterHooks(on_text=lambda k, t: seen.append((k, t))))
    assert seen[:2] == [("a", PRINTING[0]), ("a", " " + PRINTING[1])]


def test_a_checkpointed_draft_is_continued_not_rewritten():
    engine = ScriptedEngine(" ".join(PRINTING))
    draft = " ".join(f"Scribe {i} copied a psalter." for i in range(8)) + " And then the"  # 40 words, cut off
    result = write_sections(engine, BRIEF, OUTLINE, [SectionTask("a", "A", 100)], drafts={"a": draft})["a"]
    assert engine.batches[0][0].assistant_prefix == draft.removesuffix(" And then the")
    assert result.text.startswith("Scribe 0 copied a psalter.") and result.text.count("Scribe 0") == 1
    assert 85 <= result.words <= 115

