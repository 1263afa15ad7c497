"""The document WebSocket admits members only and relays saved changes, in sequence, through
the real ASGI application and the Redis channel layer."""

from __future__ import annotations

import pytest
from asgiref.sync import async_to_sync, sync_to_async
from channels.testing import WebsocketCommunicator
from django.test import Client

from tests.factories import PASSWORD
from webapp.asgi import application
from webapp.documents import services


def _headers(user) -> list[tuple[bytes, bytes]]:
    headers = [(b"origin", b"http://localhost"), (b"host", b"localhost")]
    if user is not None:
        client = Client()
        client.login(username=user.username, password=PASSWORD)
        headers.append((b"cookie", f"sessionid={client.cookies['sessionid'].value}".encode()))
    return headers


def _socket(document, headers) -> WebsocketCommunicator:
    return WebsocketCommunicator(application, f"/ws/documents/{document.id}/events/", headers=headers)


@pytest.mark.django_db(transaction=True)
def test_non_members_and_anonymous_are_refused(document, outsider):
    async def scenario(headers):
        communicator = _socket(document, headers)
        connected, code = await communicator.connect()
        await communicator.disconnect()
        return connected, code

    for user in (outsider, None):
        assert async_to_sync(scenario)(_headers(user)) == (False, 4404)


@pytest.mark.django_db(transaction=True)
def test_members_receive_saved_changes_in_sequence(document, viewer, editor):
    section = document.sections.first()

    async def scenario(headers):
        communicator = _socket(document, headers)
        connected, _ = await communicator.connect()
        assert connected
        hello = await communicator.receive_json_from(timeout=5)
        assert hello == {"type": "hello", "document_id": document.id, "role": "viewer"}
        for version, text in ((1, "First words."), (2, "Second words.")):
            await sync_to_async(services.section_save_text)(
                section_id=section.id, user=editor, text=text, expected_version=version)
        events = [await communicator.receive_json_from(timeout=5) for _ in range(2)]
        await communicator.disconnect()
        return events

    first, second = async_to_sync(scenario)(_headers(viewer))
    assert first["type"] == second["type"] == "section.text"
    assert (first["text"], second["text"]) == ("First words.", "Second words.")
    assert second["seq"] == first["seq"] + 1
    assert second["version"] == 3 and second["by"] == editor.username


@pytest.mark.django_db(transaction=True)
def test_a_foreign_origin_is_refused(document, viewer):
    async def scenario(headers):
        communicator = _socket(document, headers)
        connected, _ = await communicator.connect()
        return connected

    headers = [h for h in _headers(viewer) if h[0] != b"origin"] + [(b"origin", b"http://evil.example")]
    assert async_to_sync(scenario)(headers) is False
