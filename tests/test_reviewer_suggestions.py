"""The reviewer proposes removing sentences repeated across sections; people accept or reject.
Accepting changes the text as a new revision; nothing changes without a person's accept."""

from __future__ import annotations

import pytest

from agents.roles.reviewer import review_repetition
from tests.support.fakes import ScriptedEngine
from webapp.documents import services as documents
from webapp.runs import reviewing, suggestions
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
    proposed = reviewing.review_document(document=document)
    assert {s.section.heading for s in proposed} == {"Gulls", "Terns"}  # both repeat the introduction
    terns = next(s for s in proposed if s.section.heading == "Terns")
    gulls = next(s for s in proposed if s.section.heading == "Gulls")

    suggestions.suggestion_accept(suggestion=terns, user=editor)
    section = document.sections.get(heading="Terns")
    assert section.text == "Terns dive for fish. They migrate far."
    assert section.revisions.order_by("-id").first().author == editor

    suggestions.suggestion_reject(suggestion=gulls, user=editor)
    assert document.sections.get(heading="Gulls").text == f"Gulls are loud. {REPEATED}"
    statuses = dict(document.suggestions.values_list("section__heading", "status"))
    assert statuses == {"Terns": SuggestionStatus.ACCEPTED, "Gulls": SuggestionStatus.REJECTED}


def test_a_suggestion_on_text_that_changed_is_not_applied(document, owner, editor):
    _write(document, owner, {"Introduction": REPEATED, "Gulls": f"Gulls. {REPEATED}"})
    suggestion = reviewing.review_document(document=document)[0]
    _write(document, owner, {"Gulls": "Completely rewritten by a person."})
    with pytest.raises(suggestions.SuggestionOutdated):
        suggestions.suggestion_accept(suggestion=suggestion, user=editor)
    suggestion.refresh_from_db()
    assert suggestion.status == SuggestionStatus.STALE
    assert document.sections.get(heading="Gulls").text == "Completely rewritten by a person."


def test_a_suggestion_follows_its_text_through_later_edits_and_applies_there(document, owner, editor):
    """The reviewer anchors each suggestion in the shared text (Yjs relative positions, which
    browsers mark); accepting applies it where its text is now, even with a copy of the same
    sentence earlier in the section (replacing the first match removed the wrong one)."""
    from webapp.documents import crdt

    _write(document, owner, {"Introduction": REPEATED, "Gulls": f"Gulls. {REPEATED}"})
    suggestion = reviewing.review_document(document=document)[0]
    assert set(suggestion.anchor) == {"start", "end"}
    gulls = document.sections.get(heading="Gulls")
    shared = crdt.load(document.id)
    start, end = crdt.resolve(shared, gulls.key, suggestion.anchor)
    assert crdt.section_text(shared, gulls.key)[start:end] == REPEATED
    # Someone else writes before it, quoting the same sentence, while the suggestion is open.
    quoted = f'Field notes quote "{REPEATED}" here. Gulls. {REPEATED}'
    _write(document, editor, {"Gulls": quoted})
    suggestions.suggestion_accept(suggestion=suggestion, user=editor)
    gulls.refresh_from_db()
    assert gulls.text == f'Field notes quote "{REPEATED}" here. Gulls.'
    assert crdt.section_text(crdt.load(document.id), gulls.key) == gulls.text
    revision = gulls.revisions.order_by("-id").first()
    assert revision.author == editor and revision.summary == "Accepted suggestion by Reviewer (reviewer): repetition"


def test_a_suggestion_whose_words_were_edited_is_outdated_never_applied_elsewhere(document, owner, editor):
    from webapp.documents import crdt

    _write(document, owner, {"Introduction": REPEATED, "Gulls": f"Gulls. {REPEATED} More."})
    suggestion = reviewing.review_document(document=document)[0]
    gulls = document.sections.get(heading="Gulls")
    # A person changes one word inside it in the shared text, and pastes the original after it.
    changed = f"Gulls. {REPEATED.replace('rooftops', 'roofs')} More. {REPEATED}"
    _write(document, editor, {"Gulls": changed})
    where = crdt.resolve(crdt.load(document.id), gulls.key, suggestion.anchor)
    assert where is None or document.sections.get(heading="Gulls").text[where[0]:where[1]] != REPEATED
    with pytest.raises(suggestions.SuggestionOutdated):
        suggestions.suggestion_accept(suggestion=suggestion, user=editor)
    suggestion.refresh_from_db()
    assert suggestion.status == SuggestionStatus.STALE
    assert document.sections.get(heading="Gulls").text == changed


LEAD = ("Gulls and terns share our coasts all year. Walkers can learn to tell them apart and where to find them, "
        "from their habits and their voices.")


def test_the_finisher_writes_the_lead_and_proposes_a_title_people_decide_on(client, document, owner, editor):
    _write(document, owner, {"Gulls": "Gulls are loud.", "Terns": "Terns dive."})
    reviewing.finish_document(document=document, engine=ScriptedEngine("Wings Over the Shore", LEAD))
    document.refresh_from_db()
    assert document.lead == LEAD and document.lead_by_agent
    title = document.suggestions.get(kind="title")
    assert (title.section, title.original, title.replacement) == (None, "Coastal birds", "Wings Over the Shore")
    client.force_login(editor)
    page = client.get(f"/documents/{document.id}/").content.decode()
    assert LEAD in page and "title “Wings Over the Shore” instead of “Coastal birds”?" in page
    assert f"/suggestions/{title.id}/accept/" in page

    suggestions.suggestion_accept(suggestion=title, user=editor)
    document.refresh_from_db()
    assert document.title == "Wings Over the Shore"

    reviewing.finish_document(document=document, engine=ScriptedEngine("Seabirds at Dawn", LEAD))
    suggestions.suggestion_reject(suggestion=document.suggestions.get(status=SuggestionStatus.OPEN), user=editor)
    document.refresh_from_db()
    assert document.title == "Wings Over the Shore"


def test_a_lead_a_person_edited_is_never_rewritten(document, owner):
    documents.document_update_brief(document=document, lead="My own lead, thank you.")
    document.refresh_from_db()
    assert not document.lead_by_agent
    reviewing.finish_document(document=document, engine=ScriptedEngine("Wings Over the Shore", LEAD))
    document.refresh_from_db()
    assert document.lead == "My own lead, thank you."


def test_a_title_suggestion_is_stale_once_people_rename_the_document(document, owner, editor):
    reviewing.finish_document(document=document, engine=ScriptedEngine("Wings Over the Shore", LEAD))
    documents.document_update_brief(document=document, title="Renamed by hand")
    with pytest.raises(suggestions.SuggestionOutdated):
        suggestions.suggestion_accept(suggestion=document.suggestions.get(kind="title"), user=editor)
    document.refresh_from_db()
    assert document.title == "Renamed by hand"


def test_pinned_sections_get_no_suggestions(document, owner):
    _write(document, owner, {"Introduction": REPEATED, "Gulls": f"Gulls. {REPEATED}"})
    document.sections.filter(heading="Gulls").update(pinned=True)
    assert reviewing.review_document(document=document) == []


def test_accepting_and_rejecting_from_the_page_say_what_happened(client, document, owner, editor):
    _write(document, owner, {"Introduction": f"Welcome. {REPEATED}", "Gulls": f"Gulls are loud. {REPEATED}",
                             "Terns": f"Terns dive. {REPEATED}"})
    first, second = reviewing.review_document(document=document)[:2]
    client.force_login(editor)
    page = client.post(f"/documents/{document.id}/suggestions/{first.id}/accept/", follow=True).content.decode()
    assert "Accepted: the change is in the text and in its history." in page
    page = client.post(f"/documents/{document.id}/suggestions/{second.id}/reject/", follow=True).content.decode()
    assert "Rejected: the text stays as it was." in page
