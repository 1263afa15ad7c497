"""Rights follow the person onto open sockets: removed, demoted or logged out, a person's open
editor and events sockets change at once (writes refused, sockets closed with 4403, nothing more
received); presence says who the sender really is; the locks are the server's alone. Through
the real ASGI application and the Redis channel layer, with pycrdt peers standing in for Yjs."""

from __future__ import annotations

import asyncio
import contextlib
import json

import pytest
from asgiref.sync import async_to_sync, sync_to_async
from channels.testing import WebsocketCommunicator
from django.test import Client
from pycrdt import Decoder, create_update_message

from tests.support.factories import PASSWORD
from tests.support.sockets import session_headers
from tests.test_shared_document_crdt import BrowserPeer
from webapp.asgi import application
from webapp.documents import consumers, crdt, presence
from webapp.documents import services as documents
from webapp.documents.models import CrdtUpdate
from webapp.projects import services as projects

pytestmark = pytest.mark.django_db(transaction=True)


def _events(document, headers) -> WebsocketCommunicator:
    return WebsocketCommunicator(application, f"/ws/documents/{document.id}/events/", headers=headers)


async def _closed_with(socket: WebsocketCommunicator, timeout: float = 5) -> int | None:
    """The close code the server sent, skipping anything sent before it (None: still open)."""
    deadline = asyncio.get_running_loop().time() + timeout
    while asyncio.get_running_loop().time() < deadline:
        try:
            output = await socket.receive_output(timeout=max(0.05, deadline - asyncio.get_running_loop().time()))
        except TimeoutError:
            return None
        if output["type"] == "websocket.close":
            return output.get("code")
    return None


def _login(user) -> tuple[Client, list[tuple[bytes, bytes]]]:
    client = Client()
    client.login(username=user.username, password=PASSWORD)
    headers = [(b"origin", b"http://localhost"), (b"host", b"localhost"),
               (b"cookie", f"sessionid={client.cookies['sessionid'].value}".encode())]
    return client, headers


def test_a_removed_editor_s_sockets_close_and_their_edits_are_refused(document, project, owner, editor):
    gulls = document.sections.get(heading="Gulls")
    headers = session_headers(editor)
    membership = project.memberships.get(user=editor)

    async def scenario():
        peer, events = BrowserPeer(document, headers), _events(document, headers)
        await peer.connect()
        assert (await events.connect())[0]
        await events.receive_json_from(timeout=5)  # hello
        await peer.type(gulls.key, 0, "Typed while a member. ")
        await peer.drain()
        stored = await sync_to_async(CrdtUpdate.objects.count)()
        await sync_to_async(projects.membership_remove)(membership=membership)
        codes = await _closed_with(events), await _closed_with(peer.socket)
        # Whatever a stale client still sends is refused, and what others write reaches it no more.
        with contextlib.suppress(Exception):  # the socket is closed: sending may fail, which is fine
            await peer.type(gulls.key, 0, "Typed after removal. ")
        await sync_to_async(lambda: crdt.Peer(document.id, "test").append(gulls.key, " Written after."))()
        await asyncio.sleep(0.5)
        return codes, stored, await sync_to_async(CrdtUpdate.objects.count)()

    codes, stored, after = async_to_sync(scenario)()
    assert codes == (consumers.RIGHTS_ENDED, consumers.RIGHTS_ENDED)
    assert after == stored + 1  # the server peer's update only
    text = crdt.section_texts(crdt.load(document.id), [gulls.key])[str(gulls.key)]
    assert "Typed after removal" not in text and text.startswith("Typed while a member.")


def test_a_demoted_editor_keeps_reading_but_writes_nothing(document, project, editor):
    gulls = document.sections.get(heading="Gulls")
    headers = session_headers(editor)
    membership = project.memberships.get(user=editor)

    async def scenario():
        peer, events = BrowserPeer(document, headers), _events(document, headers)
        await peer.connect()
        assert (await events.connect())[0]
        await events.receive_json_from(timeout=5)
        await sync_to_async(projects.membership_change_role)(membership=membership, role="viewer")
        told = await events.receive_json_from(timeout=5)
        stored = await sync_to_async(CrdtUpdate.objects.count)()
        await peer.type(gulls.key, 0, "A viewer now. ")
        await asyncio.sleep(0.3)
        await sync_to_async(lambda: crdt.Peer(document.id, "test").append(gulls.key, "Still readable."))()
        await peer.drain()
        received = str(peer.text(gulls.key))
        await peer.socket.disconnect()
        await events.disconnect()
        return told, stored, await sync_to_async(CrdtUpdate.objects.count)(), received

    told, stored, after, received = async_to_sync(scenario)()
    assert told == {"type": "rights.changed", "role": "viewer"}
    assert after == stored + 1 and "Still readable." in received
    assert "A viewer now" not in crdt.section_texts(crdt.load(document.id), [gulls.key])[str(gulls.key)]


def test_logging_out_closes_the_sockets_that_session_opened(document, editor):
    client, headers = _login(editor)

    async def scenario():
        events = _events(document, headers)
        assert (await events.connect())[0]
        await events.receive_json_from(timeout=5)
        response = await sync_to_async(client.post)("/accounts/logout/")
        assert response.status_code == 302
        return await _closed_with(events)

    assert async_to_sync(scenario)() == consumers.RIGHTS_ENDED


def test_a_password_changed_elsewhere_closes_this_session_s_sockets(document, editor):
    _, headers = _login(editor)
    other, _ = _login(editor)

    async def scenario():
        events = _events(document, headers)
        assert (await events.connect())[0]
        await events.receive_json_from(timeout=5)
        response = await sync_to_async(other.post)("/accounts/password/", {
            "old_password": PASSWORD, "new_password1": "a-new-unusual-passphrase",
            "new_password2": "a-new-unusual-passphrase"})
        assert response.status_code == 302
        return await _closed_with(events)

    assert async_to_sync(scenario)() == consumers.RIGHTS_ENDED


def test_rights_are_checked_again_even_when_the_news_is_lost(document, project, editor, monkeypatch):
    """A membership deleted behind the services' back (no message to the sockets): the next
    update past RECHECK_S is refused and the socket closes."""
    monkeypatch.setattr(consumers, "RECHECK_S", 0.0)
    gulls = document.sections.get(heading="Gulls")
    headers = session_headers(editor)

    async def scenario():
        peer = BrowserPeer(document, headers)
        await peer.connect()
        await sync_to_async(lambda: project.memberships.filter(user=editor).delete())()
        stored = await sync_to_async(CrdtUpdate.objects.count)()
        await peer.type(gulls.key, 0, "Too late. ")
        return await _closed_with(peer.socket), stored, await sync_to_async(CrdtUpdate.objects.count)()

    code, stored, after = async_to_sync(scenario)()
    assert code == consumers.RIGHTS_ENDED and after == stored


def _awareness(entries: list[tuple[int, int, str]]) -> bytes:
    from pycrdt import write_var_uint

    update = write_var_uint(len(entries)) + b"".join(
        write_var_uint(client) + write_var_uint(clock) + write_var_uint(len(state.encode())) + state.encode()
        for client, clock, state in entries)
    return bytes([1]) + write_var_uint(len(update)) + update


def _states(message: bytes) -> dict[int, dict | None]:
    decoder = Decoder(Decoder(message[1:]).read_message())
    states = {}
    for _ in range(decoder.read_var_uint()):
        client, _clock, state = decoder.read_var_uint(), decoder.read_var_uint(), decoder.read_var_string()
        states[client] = json.loads(state)
    return states


def test_presence_names_the_real_sender_with_a_server_colour(document, owner, viewer):
    """A viewer's client claims to be the owner, with CSS in its colour, then speaks for another
    client: everyone sees the viewer's own name and colour, and only for its own client."""
    forged = json.dumps({"user": {"name": owner.username, "color": "red;background:url(//evil)"},
                         "cursor": {"anchor": {"x": 1}, "head": {"x": 2}}, "extra": "x" * 50})

    owner_headers, viewer_headers = session_headers(owner), session_headers(viewer)

    async def scenario():
        watcher, liar = BrowserPeer(document, owner_headers), BrowserPeer(document, viewer_headers)
        await watcher.connect()
        await liar.connect()
        await watcher.drain()
        await liar.socket.send_to(bytes_data=_awareness([(4242, 1, forged)]))
        seen = await watcher.socket.receive_from(timeout=5)
        for other in range(1, 5):  # then it tries to speak for others' clients
            await liar.socket.send_to(bytes_data=_awareness([(9000 + other, 1, forged)]))
        await asyncio.sleep(0.3)
        later = []
        while not await watcher.socket.receive_nothing(timeout=0.3):
            later.append(await watcher.socket.receive_from())
        await watcher.socket.disconnect()
        await liar.socket.disconnect()
        return seen, later

    seen, later = async_to_sync(scenario)()
    assert _states(seen) == {4242: {"user": presence.person(viewer.username), "cursor": {"anchor": {"x": 1},
                                                                                        "head": {"x": 2}}}}
    speaking_for = {client for message in later if message[0] == 1 for client in _states(message)}
    assert speaking_for == {9001}  # two clients a socket at most: its own, and one renewal


def test_no_client_can_lock_a_section_for_everyone(document, editor):
    """Only the server writes the `writers` map: a lock a client adds is undone, for it too."""
    gulls = document.sections.get(heading="Gulls")
    headers = session_headers(editor)

    async def scenario():
        peer = BrowserPeer(document, headers)
        await peer.connect()
        before = peer.doc.get_state()
        peer.doc.get(crdt.WRITERS, type=crdt.Map)[str(gulls.key)] = {"name": "Fake writer", "run": 1}
        await peer.socket.send_to(bytes_data=create_update_message(peer.doc.get_update(before)))
        await peer.drain()
        await peer.socket.disconnect()
        return dict(peer.doc.get(crdt.WRITERS, type=crdt.Map))

    assert async_to_sync(scenario)() == {}
    assert crdt.writers(crdt.load(document.id)) == {}
    documents.section_save_text(section_id=gulls.id, user=editor, text="Still free to edit.",
                                expected_version=gulls.version)  # nobody holds it


def test_a_socket_cannot_speak_for_another_member_s_client(document, owner, editor):
    """Each socket spoke for the clients it introduced first, so a second socket could claim a
    member's client id first used on another socket, and remove or overwrite their presence.
    A client id belongs to the person whose socket used it first (their other pages too)."""
    owner_headers, editor_headers = session_headers(owner), session_headers(editor)
    mine = json.dumps({"cursor": {"anchor": {"x": 1}, "head": {"x": 1}}})

    async def scenario():
        olivia, again, edgar = (BrowserPeer(document, owner_headers), BrowserPeer(document, owner_headers),
                                BrowserPeer(document, editor_headers))
        for peer in (olivia, again, edgar):
            await peer.connect()
            await peer.drain()
        await olivia.socket.send_to(bytes_data=_awareness([(7777, 1, mine)]))
        first = await edgar.socket.receive_from(timeout=5)
        await edgar.socket.send_to(bytes_data=_awareness([(7777, 2, "null")]))  # "Olivia left"
        await asyncio.sleep(0.3)
        forged = []
        while not await olivia.socket.receive_nothing(timeout=0.3):
            forged.append(await olivia.socket.receive_from())
        await again.drain()
        await again.socket.send_to(bytes_data=_awareness([(7777, 3, mine)]))  # her page, reconnected
        renewed = await edgar.socket.receive_from(timeout=5)
        for peer in (olivia, again, edgar):
            await peer.socket.disconnect()
        return first, forged, renewed

    first, forged, renewed = async_to_sync(scenario)()
    assert _states(first)[7777]["user"]["name"] == owner.username
    heard = [_states(message)[7777] for message in forged if message[0] == 1 and 7777 in _states(message)]
    assert all(state is not None and state["user"]["name"] == owner.username for state in heard)  # her own echo
    assert _states(renewed)[7777]["user"]["name"] == owner.username
