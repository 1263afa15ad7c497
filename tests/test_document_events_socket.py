"""The document WebSocket admits members only and relays saved changes, in sequence, through
the real ASGI application and the Redis channel layer."""

from __future__ import annotations

import asyncio

import pytest
from asgiref.sync import async_to_sync, sync_to_async
from channels.testing import WebsocketCommunicator
from django.test import Client

from tests.support.factories import PASSWORD
from tests.support.sockets import session_headers
from webapp.asgi import application
from webapp.documents import services
from webapp.events import current_seq, document_group
from webapp.runs import reviewing


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
        assert async_to_sync(scenario)(session_headers(user)) == (False, 4404)


@pytest.mark.django_db(transaction=True)
def test_members_receive_saved_changes_in_sequence(document, viewer, editor):
    section = document.sections.first()

    async def scenario(headers):
        communicator = _socket(document, headers)
        connected, _ = await communicator.connect()
        assert connected
        hello = await communicator.receive_json_from(timeout=5)
        assert hello == {"type": "hello", "document_id": document.id, "role": "viewer",
                         "seq": current_seq(document_group(document.id))}
        for version, text in ((1, "First words."), (2, "Second words.")):
            await sync_to_async(services.section_save_text)(
                section_id=section.id, user=editor, text=text, expected_version=version)
        events = [await communicator.receive_json_from(timeout=5) for _ in range(2)]
        await communicator.disconnect()
        return events

    first, second = async_to_sync(scenario)(session_headers(viewer))
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

    headers = [h for h in session_headers(viewer) if h[0] != b"origin"] + [(b"origin", b"http://evil.example")]
    assert async_to_sync(scenario)(headers) is False


class Mirror:
    """What a browser keeps of a document: section texts, updated from events, resynchronised
    from /documents/<id>/state/ when it notices it missed something. This is the protocol the
    live page follows (issue 5 builds that page)."""

    def __init__(self, client: Client, document_id: int):
        self.client, self.document_id, self.resyncs = client, document_id, 0
        self.resync()

    def resync(self) -> None:
        state = self.client.get(f"/documents/{self.document_id}/state/").json()
        assert all(s["key"] for s in state["sections"])  # the name of its text in the shared document
        self.seq, self.texts = state["seq"], {s["id"]: s["text"] for s in state["sections"]}
        self.versions = {s["id"]: s["version"] for s in state["sections"]}
        self.keys = {s["id"]: s["key"] for s in state["sections"]}
        self.suggestions = {s["id"]: (s["original"], s["replacement"]) for s in state["suggestions"]}
        self.resyncs += 1

    def apply(self, event: dict) -> None:
        if event["seq"] > self.seq + 1:
            self.resync()  # a gap: events were lost
        section = event.get("section_id")
        if event["seq"] > self.seq and event["type"] == "section.text" \
                and event["version"] >= self.versions.get(section, 0):
            self.texts[section], self.versions[section] = event["text"], event["version"]
        self.seq = max(self.seq, event["seq"])


@pytest.mark.django_db(transaction=True)
def test_a_client_that_missed_events_resynchronises_from_the_database(document, viewer, editor):
    gulls, terns = document.sections.get(heading="Gulls"), document.sections.get(heading="Terns")
    http = Client()
    http.login(username=viewer.username, password=PASSWORD)
    mirror = Mirror(http, document.id)
    headers = session_headers(viewer)

    async def receive_one(text: str):
        communicator = _socket(document, headers)
        assert (await communicator.connect())[0]
        await communicator.receive_json_from(timeout=5)  # hello
        await sync_to_async(services.section_save_text)(section_id=gulls.id, user=editor, text=text,
                                                        expected_version=gulls.version)
        event = await communicator.receive_json_from(timeout=5)
        await communicator.disconnect()  # the socket drops
        return event

    mirror.apply(async_to_sync(receive_one)("Gulls one."))
    gulls.refresh_from_db()
    assert mirror.texts[gulls.id] == "Gulls one." and mirror.resyncs == 1
    # While the socket is down, others keep writing and the reviewer proposes; the browser hears none of it.
    services.section_save_text(section_id=terns.id, user=editor, text="Terns, written offline.",
                               expected_version=terns.version)
    intro = document.sections.get(heading="Introduction")
    services.section_save_text(section_id=intro.id, user=editor, expected_version=intro.version,
                               text="Terns, written offline. Terns dive for small fish off the harbour wall.")
    terns.refresh_from_db()
    services.section_save_text(section_id=terns.id, user=editor, expected_version=terns.version,
                               text="Terns, written offline. Terns dive for small fish off the harbour wall.")
    proposed = reviewing.review_document(document=document)
    services.section_save_text(section_id=gulls.id, user=editor, text="Gulls two.", expected_version=gulls.version)
    gulls.refresh_from_db()
    # Back online: the next event shows a gap, and the mirror reloads the state.
    mirror.apply(async_to_sync(receive_one)("Gulls three."))
    assert mirror.resyncs == 2
    assert mirror.texts == {s.id: s.text for s in document.sections.all()}
    assert mirror.keys == {s.id: str(s.key) for s in document.sections.all()}
    assert proposed and mirror.suggestions == {s.id: (s.original, s.replacement) for s in proposed}
    assert mirror.texts[terns.id].startswith("Terns, written offline.") and mirror.texts[gulls.id] == "Gulls three."


@pytest.mark.django_db(transaction=True)
def test_streamed_text_reaches_clients_through_the_shared_document_and_no_event_repeats_it(document, editor,
                                                                                             viewer):
    """Pages and Yjs peers get a writer's text from the shared document; the events socket carries
    only what changes a page's regions (here the checkpoint's numbers), never a piece of text."""
    from webapp.documents import crdt
    from webapp.runs import writing as runs
    from webapp.runs.models import AgentTask, WritingRun

    section = document.sections.get(heading="Gulls")
    run = WritingRun.objects.create(document=document, created_by=editor, status="writing")
    task = AgentTask.objects.create(run=run, role="writer", section=section, status="running",
                                    base_version=section.version)
    pieces = ["Gulls", " are", " loud", " birds", " of", " the", " shore."]
    headers = session_headers(viewer)

    async def stream():
        communicator = _socket(document, headers)
        assert (await communicator.connect())[0]
        await communicator.receive_json_from(timeout=5)
        streamer = await sync_to_async(runs._Streamer)(run, {"k": task})
        for index, piece in enumerate(pieces):
            await sync_to_async(streamer)("k", piece)
            if index == 3:
                await sync_to_async(streamer.checkpoint)()  # as it does every second
            await asyncio.sleep(runs.BROADCAST_EVERY_S)  # each piece its own update
        await sync_to_async(streamer.flush)()
        events = []
        while not await communicator.receive_nothing(timeout=0.3):
            events.append(await communicator.receive_json_from())
        await communicator.disconnect()
        return events

    events = async_to_sync(stream)()
    assert [e["type"] for e in events] == ["run.progress"]  # the checkpoint's numbers, no text
    assert crdt.section_text(crdt.load(document.id), section.key) == "".join(pieces)


def test_the_page_takes_event_types_from_their_one_definition():
    """webapp/events.py names every type; frontend/src/events.json is written from it and the
    page's JavaScript spells none of them itself."""
    import json
    import re

    from tests.support.processes import ROOT
    from webapp import events

    assert json.loads((ROOT / "frontend/src/events.json").read_text()) == events.client_types(), \
        "run `python -m webapp.events > frontend/src/events.json`"
    script = "\n".join(path.read_text() for path in (ROOT / "frontend/src").glob("*.js"))
    spelled = {kind for kind in events.client_types().values() if re.search(rf"[\"'`]{re.escape(kind)}[\"'`]", script)}
    assert not spelled, f"event types spelled out in the page's JavaScript: {spelled}"


def test_the_channel_layer_reads_longer_than_it_blocks():
    """Its connections must not time out while a consumer waits for messages (the blocking pop)."""
    from channels.layers import get_channel_layer

    layer = get_channel_layer()
    kwargs = layer.create_pool(0).connection_kwargs
    assert kwargs["socket_timeout"] > 2 * layer.brpop_timeout and kwargs["socket_keepalive"]


@pytest.mark.slow  # two idle minutes, as a page left open
@pytest.mark.django_db(transaction=True)
def test_an_idle_socket_stays_up_for_two_minutes_and_still_hears_events(document, viewer, caplog):
    from webapp import events

    headers = session_headers(viewer)

    async def scenario():
        communicator = _socket(document, headers)
        assert (await communicator.connect())[0]
        await communicator.receive_json_from(timeout=5)  # hello
        assert await communicator.receive_nothing(timeout=120, interval=1.0)  # idle, and nothing breaks
        await sync_to_async(events.send)(events.RunStatusChanged(document_id=document.id, run_id=0, status="done",
                                                                 error=""), now=True)
        event = await communicator.receive_json_from(timeout=5)
        await communicator.disconnect()
        return event

    event = async_to_sync(scenario)()
    assert event["type"] == "run.status" and event["status"] == "done"
    assert not [r for r in caplog.records if r.levelname in ("ERROR", "CRITICAL")], caplog.text
