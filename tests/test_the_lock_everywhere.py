"""Issue 25: a section an agent is writing is locked on every path a person changes text by (the
form, a restore, accepting a suggestion, the live editor's socket), each refusing in the same
words; and a restore that would change nothing says so instead of "Restored"."""

from __future__ import annotations

import pytest
from asgiref.sync import async_to_sync
from channels.testing import WebsocketCommunicator

from tests.support.factories import PASSWORD
from tests.support.sockets import session_headers
from tests.test_shared_document_crdt import BrowserPeer
from webapp.asgi import application
from webapp.documents import crdt
from webapp.documents import services as documents
from webapp.documents.models import Revision
from webapp.runs.models import Suggestion

WRITER = {"name": "Section writer", "role": "writer", "color": "#8e24aa", "run": 1}
HELD = "Section writer is writing “Gulls” now. You can edit it the moment it is done, or take it over"


@pytest.fixture
def gulls(document, owner):
    section = document.sections.get(heading="Gulls")
    documents.section_save_text(section_id=section.id, user=owner, text="Gulls are loud.",
                                expected_version=section.version)
    section.refresh_from_db()
    return section


def _hold(section) -> None:
    crdt.Peer(section.document_id, "writer").set_writer(section.key, WRITER)


def _unchanged(section, text: str = "Gulls are loud.") -> None:
    version = section.version
    section.refresh_from_db()
    assert section.text == text and section.version == version


def test_the_form_shows_the_lock_and_refuses_a_save_while_an_agent_writes(client, document, owner, gulls):
    _hold(gulls)
    client.login(username=owner.username, password=PASSWORD)
    url = f"/documents/{document.id}/sections/{gulls.id}/edit/"
    page = client.get(url).content.decode()
    assert HELD in page and "<fieldset disabled>" in page
    response = client.post(url, {"text": "Mine now.", "version": gulls.version})
    assert response.status_code == 200 and HELD in response.content.decode()
    _unchanged(gulls)
    crdt.Peer(document.id, "writer").set_writer(gulls.key, None)  # the writer is done
    assert HELD not in client.get(url).content.decode()
    response = client.post(url, {"text": "Mine now.", "version": gulls.version})
    assert response.status_code == 302
    gulls.refresh_from_db()
    assert gulls.text == "Mine now."


def test_a_restore_and_an_accept_are_refused_in_the_same_words(client, document, owner, gulls):
    older = gulls.revisions.order_by("id").first()
    documents.section_save_text(section_id=gulls.id, user=owner, text="Gulls are loud birds.",
                                expected_version=gulls.version)
    gulls.refresh_from_db()
    suggestion = Suggestion.objects.create(document=document, section=gulls, role="reviewer", kind="style",
                                           original="loud", replacement="noisy", reason="Plainer.")
    _hold(gulls)
    client.login(username=owner.username, password=PASSWORD)
    response = client.post(f"/documents/{document.id}/revisions/{older.id}/restore/", follow=True)
    assert HELD in response.content.decode()
    response = client.post(f"/documents/{document.id}/suggestions/{suggestion.id}/accept/", follow=True)
    assert HELD in response.content.decode()
    _unchanged(gulls, "Gulls are loud birds.")
    suggestion.refresh_from_db()
    assert suggestion.status == "open"


def test_restoring_the_text_a_section_already_has_says_so_and_records_nothing(client, document, owner, gulls):
    revision = gulls.revisions.order_by("-id").first()
    assert revision.content == gulls.text
    count = Revision.objects.count()
    client.login(username=owner.username, password=PASSWORD)
    page = client.post(f"/documents/{document.id}/revisions/{revision.id}/restore/", follow=True).content.decode()
    assert "already has this text; nothing was restored" in page and "Restored" not in page
    assert Revision.objects.count() == count


@pytest.mark.django_db(transaction=True)
def test_an_edit_in_the_live_editor_is_undone_and_the_person_told_why(document, editor, gulls):
    _hold(gulls)
    headers = session_headers(editor)

    async def scenario():
        peer = BrowserPeer(document, headers)
        events = WebsocketCommunicator(application, f"/ws/documents/{document.id}/events/", headers=headers)
        await peer.connect()
        assert (await events.connect())[0]
        await events.receive_json_from(timeout=5)  # hello
        await peer.type(gulls.key, 0, "Mine: ")
        await peer.drain()
        notice = await events.receive_json_from(timeout=5)
        await events.disconnect()
        await peer.socket.disconnect()
        return notice, str(peer.text(gulls.key))

    notice, typed = async_to_sync(scenario)()
    assert notice["type"] == "notice" and HELD in notice["text"]
    assert typed == "Gulls are loud."
