"""The reviewer finds what a reader counts: talk about the writing found by meaning, loops inside
a section, words nobody knows, sentences off the brief and invented claims, each as a proposal
people decide on; `evaluate` measures its recall against the independent measures' defects."""

from __future__ import annotations

from agents import evaluation, quality
from agents.outline import Brief
from agents.roles import reader_checks, reviewer

TOPIC = "How tides work"
SECTIONS = [
    ("1", "The pull of the moon",
     "The moon pulls the oceans toward it as the earth turns. "
     "In this section we will talk about what I wrote above and why you should keep reading. "
     "Water piles up on the side of the earth that faces the moon. "
     "The moon pulls the oceans toward it as the earth turns below."),
    ("2", "Spring and neap tides",
     "When the sun and moon line up, tides grow larger. "
     "Sler vontrabe the glimmers plorkish at dawn. "
     "My favourite pizza topping is pineapple with extra cheese. "
     "The tide tables were first drawn up by Admiral Hendrik Voss in 1611."),
]


def _judges() -> reader_checks.Judges:
    return reader_checks.Judges.default()


def test_a_loop_inside_one_section_is_proposed_for_removal():
    found = reviewer.review_repetition(SECTIONS[:1])
    assert [(p.section_key, p.original) for p in found] == [
        ("1", "The moon pulls the oceans toward it as the earth turns below.")]
    assert "said above" in found[0].reason


def test_the_reviewer_reads_as_a_reader_with_the_classifier_the_lexicon_and_embeddings():
    proposals = reviewer.review(None, TOPIC, SECTIONS, judges=_judges())
    kinds = {p.original: p.kind for p in proposals}
    assert kinds["In this section we will talk about what I wrote above and why you should keep reading."] == "meta"
    assert kinds["Sler vontrabe the glimmers plorkish at dawn."] == "junk"
    assert kinds["My favourite pizza topping is pineapple with extra cheese."] == "off-brief"
    assert kinds["The tide tables were first drawn up by Admiral Hendrik Voss in 1611."] == "claim"
    assert "Water piles up on the side of the earth that faces the moon." not in kinds
    assert "When the sun and moon line up, tides grow larger." not in kinds
    assert all(p.replacement == "" for p in proposals)  # each a removal people decide on


def test_without_judges_only_the_rules_run():
    kinds = {p.kind for p in reviewer.review(None, TOPIC, SECTIONS)}
    assert kinds <= {"meta", "repetition", "consistency", "claim"} and "junk" not in kinds


def test_recall_counts_the_defects_the_reviewer_proposes_a_change_to():
    brief = Brief(topic=TOPIC, target_words=300)
    texts = [(heading, text) for _, heading, text in SECTIONS]
    judges = _judges()
    defects = evaluation.reader_defects(brief, texts, judges.embed, judges.lexicon, known=TOPIC)
    assert {kind for _, _, kind in defects} >= {"meta", "repeated", "junk", "off-brief", "claim"}
    proposals = reviewer.review(None, TOPIC, SECTIONS, judges=judges)
    scores = evaluation.reviewer_recall(defects, [(int(p.section_key) - 1, p.original) for p in proposals])
    assert scores["reviewer_recall"] == 100.0
    assert evaluation.reviewer_recall(defects, [])["reviewer_recall"] == 0.0
    assert evaluation.reviewer_recall([], [])["reviewer_recall"] is None


def test_unknown_words_count_capitalised_non_words_and_runs_of_another_language():
    lexicon = quality.Lexicon(["the", "tide", "rises", "at", "dawn", "and", "falls"])
    assert reader_checks.unknown_words("The tide rises at dawn.", lexicon, frozenset()) == []
    assert reader_checks.unknown_words("Sler tide rises at dawn.", lexicon, frozenset()) == ["Sler"]
    assert reader_checks.unknown_words("Sler tide rises at dawn.", lexicon, frozenset({"sler"})) == []
    foreign = "La marea sube y baja cada dia"
    assert reader_checks.unknown_words(foreign, lexicon, frozenset()) == foreign.split()


def test_a_numbered_lists_numbers_are_neither_chatter_nor_claims():
    """A list item's "1." splits off as a sentence of its own: the classifier scored it 0.8 as
    talk about the writing and the claims check read it as a number (seen on test-half articles,
    where list numbers made 5 of the classifier's 36 points of meta)."""
    listed = [("1", "Kinds of tides", "1. Spring tides come at full and new moon.\n\n2. Neap tides come between.")]
    assert [p.original for p in reviewer.review(None, TOPIC, listed, judges=_judges())] == []
    brief = Brief(topic=TOPIC, target_words=300)
    scores = evaluation.independent_scores(brief, [(h, t) for _, h, t in listed], ["Kinds of tides"],
                                           _judges().embed, _judges().lexicon)
    assert scores["meta_classifier"] == 0.0


def test_a_heading_or_the_topic_used_as_a_label_in_the_prose_is_proposed_for_removal():
    sections = [("1", "The Basics", "The Basics: GPS is a navigation system. Satellites carry clocks."),
                ("2", "Satellites and clocks", "How tides work: the moon pulls. Note the clocks: they drift.")]
    found = [(p.section_key, p.original) for p in reviewer.review_labels(sections, TOPIC)]
    assert found == [("1", "The Basics: GPS is a navigation system."), ("2", "How tides work: the moon pulls.")]


def test_sentences_split_after_a_closing_quote_and_between_paragraphs():
    text = '"It is an intriguing topic."\n\nThis sentence conveys it. He said (so.) Then more'
    assert reader_checks.sentences(text) == ['"It is an intriguing topic."', "This sentence conveys it.",
                                             "He said (so.)", "Then more"]
    assert all(piece in text for piece in reader_checks.sentences(text))  # exact spans, for anchors


def test_naming_the_texts_parts_or_its_author_is_talk_about_the_writing():
    for sentence in ["In this opening paragraph, the author explains the routes.", "This sentence conveys the idea.",
                     "Translated into English: the road was long.", "It will make your readers think."]:
        assert quality.is_meta(sentence), sentence
    assert not quality.is_meta("Caravans crossed the desert in the cool of the night.")
