"""The reviewer proposes removing sentences repeated across sections; people accept or reject.
Accepting changes the text as a new revision; nothing changes without a person's accept."""

from __future__ import annotations

import pytest

from agents.roles.reviewer import review_repetition
from webapp.documents import services as documents
from webapp.runs import services
from webapp.runs.models import SuggestionStatus

REPEATED = "Herring gulls nest on rooftops in many coastal towns today."


def _write(document, owner, texts):
    for heading, text in texts.items():
        section = document.sections.get(heading=heading)
        documents.section_save_text(section_id=section.id, user=owner, text=text, expected_version=section.version)


def test_a_sentence_repeated_in_a_later_section_is_proposed_for_removal():
    proposals = review_repetition([
        ("1", "Gulls", f"Gulls are loud. {REPEATED}"),
        ("2", "Terns", f"Terns dive for fish. {REPEATED.replace('today', 'now')} They migrate far."),
    ])
    assert len(proposals) == 1
    assert proposals[0].section_key == "2" and proposals[0].original.startswith("Herring gulls nest")
    assert "Gulls" in proposals[0].reason


def test_nothing_is_proposed_for_distinct_sections():
    assert review_repetition([("1", "A", "Gulls are loud birds of the shore."),
                              ("2", "B", "Terns dive into the sea for small fish.")]) == []


def test_accept_applies_the_change_as_a_revision_and_reject_leaves_the_text(document, owner, editor):
    _write(document, owner, {"Gulls": f"Gulls are loud. {REPEATED}",
                             "Terns": f"Terns dive for fish. {REPEATED} They migrate far.",
                             "Introduction": f"Welcome. {REPEATED}"})
    suggestions = services.review_document(document=document)
    assert {s.section.heading for s in suggestions} == {"Gulls", "Terns"}  # both repeat the introduction
    terns = next(s for s in suggestions if s.section.heading == "Terns")
    gulls = next(s for s in suggestions if s.section.heading == "Gulls")

    services.suggestion_accept(suggestion=terns, user=editor)
    section = document.sections.get(heading="Terns")
    assert section.text == "Terns dive for fish. They migrate far."
    assert section.revisions.order_by("-id").first().author == editor

    services.suggestion_reject(suggestion=gulls, user=editor)
    assert document.sections.get(heading="Gulls").text == f"Gulls are loud. {REPEATED}"
    statuses = dict(document.suggestions.values_list("section__heading", "status"))
    assert statuses == {"Terns": SuggestionStatus.ACCEPTED, "Gulls": SuggestionStatus.REJECTED}


def test_a_suggestion_on_text_that_changed_is_not_applied(document, owner, editor):
    _write(document, owner, {"Introduction": REPEATED, "Gulls": f"Gulls. {REPEATED}"})
    suggestion = services.review_document(document=document)[0]
    _write(document, owner, {"Gulls": "Completely rewritten by a person."})
    with pytest.raises(services.SuggestionOutdated):
        services.suggestion_accept(suggestion=suggestion, user=editor)
    suggestion.refresh_from_db()
    assert suggestion.status == SuggestionStatus.STALE
    assert document.sections.get(heading="Gulls").text == "Completely rewritten by a person."
