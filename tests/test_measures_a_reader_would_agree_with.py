"""Headings that are headings, the chatter classifier on its held-out split, claims to check,
and the evaluation's measures that share no rule with the writers' filter."""

from __future__ import annotations

import json

import pytest

from agents import chatter, claims, evaluation, quality
from agents.headings import as_heading, heading_problem
from agents.outline import Brief


@pytest.mark.parametrize("heading", ["Section 2: How to make your own bread", "Title", "Gutenberg's workshop (1 of 2)",
                                     "To have patience and perseverance in order to achieve this",
                                     "Riding a bike is not an easy task and it requires great",
                                     "We will look at salts", "Explain the light reactions", "What happens",
                                     # cut mid-phrase (a brief's words cut at a length)
                                     "Hiking in the Highlands and how", "What to do if you get lost in"])
def test_what_is_no_heading(heading):
    assert heading_problem(heading) is not None


@pytest.mark.parametrize("heading", ["The pull of the moon", "Refunds and exchanges", "Choosing a bag", "DNS",
                                     "How tides work", "What happens when a link breaks", "Her early life",
                                     "Checking in", "Knowing why", "Things to look out for"])
def test_what_is_a_heading(heading):
    assert heading_problem(heading) is None


def test_bad_headings_are_repaired_into_noun_phrases():
    assert as_heading("Hiking in the Highlands and how") == "Hiking in the Highlands"
    assert as_heading("Section 2: How to make your own bread") == "Making your own bread"
    instruction = "To have patience and perseverance in order to achieve this"
    assert as_heading(instruction) == "Having patience and perseverance"
    assert as_heading("Riding a bike is not an easy task and it requires great") == "Riding a bike"
    assert as_heading("Gutenberg's workshop (1 of 2)") == "Gutenberg's workshop"


def test_the_chatter_classifier_holds_on_its_held_out_split():
    """Trained on the training split only; on the held-out one (topics it never saw) it finds
    the talk about the writing at the evaluation's threshold and stays precise at the filter's."""
    train, heldout = chatter.split(json.loads(chatter.LABELLED.read_text()))
    assert {i["text"] for i in train}.isdisjoint(i["text"] for i in heldout)
    assert {i["group"] for i in heldout if not i["meta"]} >= chatter.HELDOUT_GROUPS
    classifier = chatter.default_chatter()
    probability = classifier.probability([i["text"] for i in heldout])

    def rates(threshold):
        predicted = probability >= threshold
        tp = sum(bool(p) and i["meta"] for p, i in zip(predicted, heldout, strict=True))
        fp = sum(bool(p) and not i["meta"] for p, i in zip(predicted, heldout, strict=True))
        fn = sum(not bool(p) and i["meta"] for p, i in zip(predicted, heldout, strict=True))
        return tp / max(1, tp + fp), tp / max(1, tp + fn)

    precision, recall = rates(chatter.THRESHOLD)
    assert recall >= 0.9 and precision >= 0.8
    precision, recall = rates(chatter.FILTER_THRESHOLD)
    assert precision >= 0.95 and recall >= 0.7  # the filter refuses little but meta; the phrase rules do more
    # Talk about the writing that the phrase rules miss, in no training file:
    unseen = "Finally, double-check every sentence before you submit it."
    assert not quality.is_meta(unseen) and classifier(unseen)


def test_a_section_that_calls_itself_an_introduction_or_an_invitation_to_read_is_talk_about_the_writing():
    """A killed writer's checkpoint (the bundled model, greedy, on an AVX-512 BF16 machine) began
    with sentences that present the section as a work; they passed the filter, the resumed writer
    went on in the same voice, every continuation was refused as meta, and the section ended at 46
    of its 140 words."""
    for sentence in ('"Before the press" is a welcome introduction to a topic that will go on forever.',
                     "It serves as an invitation for readers to take a moment before they simply continue reading.",
                     "This chapter is a short introduction to the subject of early printing."):
        assert quality.is_meta(sentence), sentence
    for sentence in ("The book is an introduction to the history of printing in Mainz.",
                     "Gutenberg's press was an invitation to forgers of indulgences.",
                     "Readers in Venice could buy a printed Bible by 1460."):
        assert not quality.is_meta(sentence), sentence


def test_claims_no_source_supports_are_found():
    sentence = "Inventors like Christopher Columbus helped invent the first bicycle back in the year 1760."
    assert claims.unsupported(sentence, "The history of the bicycle") == ["1760", "Christopher Columbus"]
    assert claims.unsupported("Marie Curie won the Nobel Prize in 1903.", "Curie won the Nobel Prize in 1903") == []
    assert claims.claims("The Moon pulls the sea toward it.") == []


def test_independent_measures_see_what_the_filter_would_miss():
    from agents.retrieval import default_embedder

    embed = default_embedder().embed
    brief = Brief("How tides work", 200)
    looped = ("The moon pulls the sea. " * 3 + "Here’s the revised version of the text for you. "
              "Das ist nicht gut und sehr schlecht.")
    scores = evaluation.independent_scores(brief, [("Tides (1 of 2)", looped)], ["Tides (1 of 2)"], embed,
                                           quality.default_lexicon(), aspects=["how tides work"])
    assert scores["loops"] == 2  # the sentence said again, twice, inside its own section
    assert scores["meta_classifier"] > 0  # the curly apostrophe changes nothing
    assert scores["junk_strict"] > 0  # a run of another language
    assert scores["heading_quality"] == 0
