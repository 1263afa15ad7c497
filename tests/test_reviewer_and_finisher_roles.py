"""The reviewer's checks (talk about the document, spelling, model-written transitions) and the
finisher's title and lead: model answers are used only when they read right, junk falls back,
and the real backend never raises."""

from __future__ import annotations

from agents.llm.transformers_backend import TransformersEngine
from agents.outline import Brief
from agents.roles import finisher, reviewer
from tests.support.fakes import ScriptedEngine

SECTIONS = [
    ("1", "Why birds", "Seabirds gather on cliffs in spring. Their colonies are loud."),
    ("2", "Gulls", "Gulls eat almost anything. They follow fishing boats for scraps."),
    ("3", "Terns", "Terns dive for small fish. They fly south in autumn."),
]


def test_sentences_about_the_document_are_proposed_for_removal():
    proposals = reviewer.review_meta([("1", "Gulls", "Gulls are loud. This section covers 200 words about gulls.")])
    assert [(p.original, p.replacement, p.kind) for p in proposals] == [
        ("This section covers 200 words about gulls.", "", "meta")]


def test_a_word_spelled_two_ways_is_proposed_in_the_commoner_spelling():
    proposals = reviewer.review_consistency([
        ("1", "A", "Send an email to the warden. Every email is read."),
        ("2", "B", "An e-mail reply comes within a day. Organise the trip early."),
    ])
    assert [(p.section_key, p.original, p.replacement) for p in proposals] == [
        ("2", "An e-mail reply comes within a day.", "An email reply comes within a day.")]
    assert "“e-mail” → “email”" in proposals[0].reason


def test_a_good_transition_is_proposed_as_the_new_opening_and_junk_is_dropped():
    engine = ScriptedEngine(
        "Here's a possible transition sentence:\n\"Among the birds of those colonies, gulls are the boldest.\"",
        "Introduction: This section is about terns.")
    proposals = reviewer.review_transitions(engine, "Coastal birds", SECTIONS)
    assert len(engine.requests) == 2  # one batch: every section after the first
    assert [(p.section_key, p.kind) for p in proposals] == [("2", "transition")]
    assert proposals[0].original == "Gulls eat almost anything."
    assert proposals[0].replacement == ("Among the birds of those colonies, gulls are the boldest. "
                                        "Gulls eat almost anything.")


def test_pinned_sections_get_no_transition_and_each_span_gets_one_proposal():
    engine = ScriptedEngine("Terns are the acrobats of the shore.")
    text = "This section is about terns. Terns dive."
    proposals = reviewer.review(engine, "Coastal birds", [SECTIONS[0], ("2", "Gulls", SECTIONS[1][2]),
                                                          ("3", "Terns", text)], skip={"2"})
    assert [p.kind for p in proposals] == ["meta"]  # the transition wanted the same first sentence


def test_read_transition_rejects_what_is_not_a_linking_sentence():
    for answer in ("Terns.", "I hope this helps you understand terns better.", "# Terns", "",
                   "Terns dive for small fish and they fly south in autumn.",  # repeats the section
                   "The next section is about terns and their long journeys.",
                   "The previous part was about the importance of lists in blog posts. 1."):
        assert reviewer.read_transition(answer, SECTIONS[2][2], "Terns") is None, answer


def test_the_finisher_reads_a_title_and_a_lead_out_of_chatter():
    brief = Brief(topic="Coastal birds for walkers", target_words=1000)
    engine = ScriptedEngine(
        'A good title could be "Wings Over the Shore: A Walker\'s Guide"',
        "Here is a lead:\n\"Walkers meet gulls, terns and gannets on almost every stretch of coast. This guide "
        "shows how to tell them apart, where to look and when, so that a simple walk becomes a chance to watch "
        "some of the most remarkable birds in the country.\"")
    result = finisher.finish(engine, brief, [(h, t) for _, h, t in SECTIONS])
    assert result.title == "Wings Over the Shore: A Walker's Guide" and result.title_path == "model"
    assert result.lead.startswith("Walkers meet gulls") and result.lead_path == "model"
    assert "This guide" in result.lead
    assert 0.6 * finisher.lead_words(1000) <= len(result.lead.split()) <= 2 * finisher.lead_words(1000)


def test_the_finisher_falls_back_on_junk():
    brief = Brief(topic="Coastal birds for walkers. Mostly gulls.", target_words=1000)
    result = finisher.finish(ScriptedEngine("Title:", "Introduction: 40 words"), brief,
                             [(h, t) for _, h, t in SECTIONS])
    assert (result.title, result.title_path) == ("Coastal birds for walkers", "fallback")
    assert result.lead_path == "fallback" and "Why birds, Gulls and Terns" in result.lead


def test_reviewer_and_finisher_on_the_tiny_model_through_the_real_backend(tiny_model_dir):
    engine = TransformersEngine(tiny_model_dir, dtype="float32")
    proposals = reviewer.review(engine, "Coastal birds", SECTIONS)
    assert all(p.original in dict((k, t) for k, _, t in SECTIONS)[p.section_key] for p in proposals)
    result = finisher.finish(engine, Brief(topic="Coastal birds", target_words=600), [(h, t) for _, h, t in SECTIONS])
    assert result.title and result.lead and result.title_path in ("model", "fallback")


def test_a_lead_keeps_the_subject_but_not_sentences_about_the_writing_or_the_article():
    # "This article shows..." used to be kept; a reader's lead talks about gulls, not the article.
    answer = ("Gulls are loud birds of every coast in Britain, from sea cliffs to city roofs. This opening sentence "
              "sets the stage for an informative article. This article shows where to find them.")
    assert finisher.read_lead(answer, 20) == ("Gulls are loud birds of every coast in Britain, from sea cliffs to "
                                              "city roofs.")
