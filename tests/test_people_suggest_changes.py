"""Issue 25: people propose their own changes, anchored like the reviewer's, for others to accept
or reject; viewers cannot; a section an agent is writing refuses them in the lock's words."""

from __future__ import annotations

import pytest

from tests.support.factories import PASSWORD
from webapp.documents import crdt
from webapp.documents import services as documents
from webapp.runs import suggestions
from webapp.runs.models import PERSON, Suggestion

TEXT = "🐦 Gulls are loud. Terns are quick. Gulls are loud at dawn."


@pytest.fixture
def gulls(document, owner):
    section = document.sections.get(heading="Gulls")
    documents.section_save_text(section_id=section.id, user=owner, text=TEXT, expected_version=section.version)
    section.refresh_from_db()
    return section


def _post(client, person, gulls, **fields):
    client.login(username=person.username, password=PASSWORD)
    return client.post(f"/documents/{gulls.document_id}/sections/{gulls.id}/suggest/", fields, follow=True)


def test_a_person_s_suggestion_is_anchored_on_the_words_they_selected_and_another_accepts_it(
        client, document, owner, editor, gulls):
    second = TEXT.rindex("Gulls are loud")
    at = len(TEXT[:second].encode("utf-16-le")) // 2  # the editor counts UTF-16 units: the bird is two
    page = _post(client, editor, gulls, original="Gulls are loud", replacement="Gulls call", at=at,
                 reason="Plainer").content.decode()
    assert "Suggested: the others see it" in page
    made = Suggestion.objects.get(role=PERSON)
    assert made.author == editor and made.by == "edgar" and made.kind == "edit"
    assert crdt.resolve(crdt.load(document.id), gulls.key, made.anchor) == (second, second + len("Gulls are loud"))

    client.logout()
    client.login(username=owner.username, password=PASSWORD)
    page = client.get(f"/documents/{document.id}/").content.decode()
    assert f'id="suggestion-{made.id}"' in page and "edgar suggests" in page
    client.post(f"/documents/{document.id}/suggestions/{made.id}/accept/")
    gulls.refresh_from_db()
    assert gulls.text == "🐦 Gulls are loud. Terns are quick. Gulls call at dawn."  # the second, not the first
    assert gulls.revisions.order_by("-id").first().summary == "Accepted suggestion by edgar (person): edit"


def test_a_suggestion_that_cannot_be_made_says_why_and_stores_nothing(client, document, editor, viewer, gulls):
    for fields, reason in (({"original": "", "replacement": "x"}, "Select the words you want to change first."),
                           ({"original": "Puffins", "replacement": "x"}, "is no longer in"),
                           ({"original": "Terns are quick.", "replacement": "Terns are quick."}, "is the same")):
        assert reason in _post(client, editor, gulls, **fields).content.decode()
    crdt.Peer(document.id, "writer").set_writer(gulls.key, {"name": "Section writer"})
    page = _post(client, editor, gulls, original="Terns are quick.", replacement="Terns dive.").content.decode()
    assert "Section writer is writing “Gulls” now." in page
    client.logout()
    assert _post(client, viewer, gulls, original="Terns are quick.", replacement="Terns dive.").status_code in (403,
                                                                                                               404)
    assert not Suggestion.objects.exists()


def test_an_empty_replacement_suggests_removing_the_words(document, editor, gulls):
    made = suggestions.suggestion_propose(section=gulls, user=editor, original=" Terns are quick.", replacement="",
                                          at=TEXT.index(" Terns"))
    suggestions.suggestion_accept(suggestion=made, user=editor)
    gulls.refresh_from_db()
    assert gulls.text == "🐦 Gulls are loud. Gulls are loud at dawn."
