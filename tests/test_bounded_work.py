"""Every input gets bounded work and a clear answer: Markdown that made the old renderer
quadratic or recursive renders at once with its text kept; a section's length is enforced on
every path (form, shared editor, suggestion, restore, agents, the save from the editor); a
malformed filter is a 404, not a 500."""

from __future__ import annotations

import asyncio
import threading

import pytest
from asgiref.sync import async_to_sync
from channels.testing import WebsocketCommunicator
from django.test import Client

from tests.support.factories import PASSWORD
from tests.support.sockets import session_headers
from tests.test_shared_document_crdt import BrowserPeer
from webapp.asgi import application
from webapp.documents import crdt, export
from webapp.documents import services as documents

ADVERSARIAL = {
    "brackets": "[" * 20_000,
    "images": "![" * 10_000,
    "nested list": "- " * 500 + "item",  # a list 500 levels deep
    "nested quotes": ">" * 5_000 + " deep",
}


def _finishes(function, *args, seconds: float = 10.0):
    """`function(*args)`'s result, or a failure if it has not returned within `seconds` (a hang,
    not a benchmark: the old renderer took minutes on these)."""
    result: dict = {}
    thread = threading.Thread(target=lambda: result.setdefault("value", function(*args)), daemon=True)
    thread.start()
    thread.join(seconds)
    assert "value" in result, f"{function.__name__} did not finish in {seconds} s"
    return result["value"]


@pytest.mark.parametrize("name", sorted(ADVERSARIAL))
def test_markdown_that_was_quadratic_or_recursive_renders_at_once_and_keeps_its_text(name):
    text = ADVERSARIAL[name]
    html = _finishes(export.render_markdown_safe, text)
    kept = {"brackets": "[" * 20_000, "images": "![" * 10_000, "nested list": "item", "nested quotes": "deep"}[name]
    assert kept in html.replace("&gt;", ">")


def test_the_page_and_every_export_of_such_text_answer(client, document, owner):
    section = document.sections.get(heading="Gulls")
    documents.section_save_text(section_id=section.id, user=owner, text="\n\n".join(ADVERSARIAL.values()),
                                expected_version=section.version)
    client.login(username=owner.username, password=PASSWORD)
    for url in (f"/documents/{document.id}/", f"/documents/{document.id}/live/"):
        assert client.get(url).status_code == 200
    for fmt in ("md", "html", "docx"):
        assert client.get(f"/documents/{document.id}/export/{fmt}/").status_code == 200


def test_a_section_s_length_is_enforced_on_every_save(document, owner, settings):
    settings.SECTION_TEXT_MAX_CHARS = 100
    section = document.sections.get(heading="Gulls")
    with pytest.raises(documents.TextTooLong, match="at most 100 characters"):
        documents.section_save_text(section_id=section.id, user=owner, text="x" * 101,
                                    expected_version=section.version)
    with pytest.raises(documents.TextTooLong):  # an agent's text too
        documents.section_save_text(section_id=section.id, user=None, text="y" * 500, agent_role="writer",
                                    expected_version=section.version)
    section.refresh_from_db()
    assert section.text == "" and section.version == 1 and not section.revisions.exists()


def test_accepting_a_suggestion_that_would_make_a_section_too_long_says_so(client, document, owner, settings):
    from webapp.runs.models import Suggestion

    section = document.sections.get(heading="Gulls")
    documents.section_save_text(section_id=section.id, user=owner, text="Gulls are loud.",
                                expected_version=section.version)
    settings.SECTION_TEXT_MAX_CHARS = 40
    suggestion = Suggestion.objects.create(document=document, section=section, role="reviewer", kind="style",
                                           original="loud", replacement="loud, " * 10, reason="More.")
    client.login(username=owner.username, password=PASSWORD)
    response = client.post(f"/documents/{document.id}/suggestions/{suggestion.id}/accept/", follow=True)
    assert "at most 40 characters" in response.content.decode()
    section.refresh_from_db()
    assert section.text == "Gulls are loud."


@pytest.mark.django_db(transaction=True)
def test_a_paste_past_the_length_is_undone_whole_and_the_person_is_told(document, editor, settings):
    settings.SECTION_TEXT_MAX_CHARS = 5_000
    gulls = document.sections.get(heading="Gulls")
    headers = session_headers(editor)

    async def scenario():
        peer = BrowserPeer(document, headers)
        events = WebsocketCommunicator(application, f"/ws/documents/{document.id}/events/", headers=headers)
        await peer.connect()
        assert (await events.connect())[0]
        await events.receive_json_from(timeout=5)  # hello
        await peer.type(gulls.key, 0, "Gulls are loud. ")
        await peer.type(gulls.key, 16, "pasted " * 1_000)  # 7,000 characters at once
        await peer.drain()
        notice = await events.receive_json_from(timeout=5)
        # Up to the limit is fine; one keystroke past it is cut at the limit.
        await peer.type(gulls.key, len(peer.text(gulls.key)), "z" * (5_000 - 16))
        await peer.drain()
        await peer.type(gulls.key, len(peer.text(gulls.key)), "!")
        await peer.drain()
        await asyncio.sleep(0.1)
        await events.disconnect()
        await peer.socket.disconnect()
        return notice, str(peer.text(gulls.key))

    notice, typed = async_to_sync(scenario)()
    assert notice["type"] == "notice" and "at most 5,000 characters" in notice["text"]
    shared = crdt.section_texts(crdt.load(document.id), [gulls.key])[str(gulls.key)]
    assert shared == typed and len(shared) == 5_000 and "pasted" not in shared
    assert shared.startswith("Gulls are loud. zzz") and shared.endswith("z")


def test_a_history_filter_that_is_not_a_section_is_a_404(client, document, owner):
    client.login(username=owner.username, password=PASSWORD)
    assert client.get(f"/documents/{document.id}/history/?subject=not-a-uuid").status_code == 404
    assert client.get(f"/documents/{document.id}/history/?subject=outline").status_code == 200


def test_a_form_past_the_length_is_refused_with_the_reason(document, owner, settings):
    settings.SECTION_TEXT_MAX_CHARS = 100
    client = Client()
    client.login(username=owner.username, password=PASSWORD)
    section = document.sections.get(heading="Gulls")
    response = client.post(f"/documents/{document.id}/sections/{section.id}/edit/",
                           {"text": "x" * 101, "version": section.version})
    assert response.status_code == 200 and "at most 100 characters" in response.content.decode()
