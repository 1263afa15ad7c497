"""The shared document over the y-websocket protocol, with pycrdt peers standing in for browsers:
concurrent edits converge, they are stored and reach the Section rows when people pause, viewers'
edits are dropped by the server, agents write into it as peers, and a server that is restarted
(a new process, the same database) loses nothing."""

from __future__ import annotations

import asyncio
import io
import json

import pytest
from asgiref.sync import async_to_sync, sync_to_async
from channels.testing import WebsocketCommunicator
from pycrdt import Doc, Text, create_sync_message, create_update_message, handle_sync_message

from tests.support.sockets import SocketPeer, session_headers
from webapp.asgi import application
from webapp.documents import consumers, crdt, revisions
from webapp.documents import presence as presence_of
from webapp.documents import services as documents


class BrowserPeer:
    """What Yjs does in a browser, with pycrdt: sync on connect, send local updates, apply others'."""

    def __init__(self, document, headers):
        self.doc = Doc()
        self.socket = WebsocketCommunicator(application, f"/ws/documents/{document.id}/crdt", headers=headers)

    async def connect(self) -> None:
        connected, code = await self.socket.connect()
        assert connected, code
        step1 = await self.socket.receive_from(timeout=5)  # the server's state vector
        await self.socket.send_to(bytes_data=handle_sync_message(step1[1:], self.doc))
        await self.socket.send_to(bytes_data=create_sync_message(self.doc))
        await self.drain()

    def text(self, key) -> Text:
        return self.doc.get(crdt.section_name(key), type=Text)

    async def type(self, key, index: int, words: str) -> None:
        before = self.doc.get_state()
        self.text(key).insert(index, words)
        await self.socket.send_to(bytes_data=create_update_message(self.doc.get_update(before)))

    async def drain(self, quiet: float = 0.3) -> None:
        while not await self.socket.receive_nothing(timeout=quiet):
            message = await self.socket.receive_from()
            if message[0] == 0:  # sync: a step 2 or an update
                handle_sync_message(message[1:], self.doc)


@pytest.fixture
def quick_pause(monkeypatch):
    monkeypatch.setattr(consumers, "PAUSE_S", 0.2)


@pytest.mark.django_db(transaction=True)
def test_concurrent_edits_converge_are_stored_and_saved_when_people_pause(document, owner, editor, viewer,
                                                                           quick_pause):
    gulls, terns = document.sections.get(heading="Gulls"), document.sections.get(heading="Terns")
    documents.section_save_text(section_id=gulls.id, user=owner, text="Gulls are loud.",
                                expected_version=gulls.version)
    owner_headers, editor_headers, viewer_headers = (session_headers(owner), session_headers(editor),
                                                     session_headers(viewer))

    async def scenario():
        a, b, v = BrowserPeer(document, owner_headers), BrowserPeer(document, editor_headers), \
            BrowserPeer(document, viewer_headers)
        for peer in (a, b, v):
            await peer.connect()
        assert str(b.text(gulls.key)) == "Gulls are loud."  # from the database on first load
        # Both type at once, in different sections and in the same one.
        await asyncio.gather(a.type(gulls.key, 0, "Herring "), b.type(terns.key, 0, "Terns dive."),
                             b.type(gulls.key, len("Gulls are loud."), " Very."))
        await v.type(terns.key, 0, "VIEWER WAS HERE ")  # dropped by the server
        await asyncio.sleep(0.5)
        for peer in (a, b, v):
            await peer.drain()
        texts = [(str(p.text(gulls.key)), str(p.text(terns.key))) for p in (a, b)]
        viewer_sees = str(v.text(gulls.key))
        for peer in (a, b, v):
            await peer.socket.disconnect()
        return texts, viewer_sees

    texts, viewer_sees = async_to_sync(scenario)()
    assert texts[0] == texts[1] == ("Herring Gulls are loud. Very.", "Terns dive.")
    assert viewer_sees == "Herring Gulls are loud. Very."  # viewers receive updates
    stored = crdt.load(document.id)
    assert crdt.section_texts(stored, [gulls.key, terns.key]) == {str(gulls.key): texts[0][0],
                                                                   str(terns.key): "Terns dive."}
    # The pause saved both sections into their rows, with revisions by the people who typed.
    gulls.refresh_from_db()
    terns.refresh_from_db()
    assert (gulls.text, terns.text) == texts[0]
    assert terns.revisions.order_by("-id").first().author in (owner, editor)


@pytest.mark.django_db(transaction=True)
def test_a_form_save_and_an_agent_s_text_reach_open_editors(document, owner, editor):
    gulls = document.sections.get(heading="Gulls")
    headers = session_headers(editor)

    async def scenario():
        peer = BrowserPeer(document, headers)
        await peer.connect()
        await sync_to_async(documents.section_save_text)(section_id=gulls.id, user=owner,
                                                         text="Saved from the form.", expected_version=gulls.version)

        def agent_writes():
            agent = crdt.Peer(document.id, "writer")
            agent.set_writer(gulls.key, {"name": "Section writer"})
            for piece in (" Then", " an agent", " wrote."):
                agent.append(gulls.key, piece)
            return crdt.writers(agent.doc)

        locked = await sync_to_async(agent_writes)()
        await asyncio.sleep(0.3)
        await peer.drain()
        seen = str(peer.text(gulls.key)), crdt.writers(peer.doc)
        await peer.socket.disconnect()
        return locked, seen

    locked, (text, writers) = async_to_sync(scenario)()
    assert text == "Saved from the form. Then an agent wrote."
    assert str(gulls.key) in locked and str(gulls.key) in writers  # editors lock the section


@pytest.mark.django_db(transaction=True)
def test_non_members_cannot_open_the_shared_document(document, outsider):
    headers = session_headers(outsider)

    async def scenario():
        socket = WebsocketCommunicator(application, f"/ws/documents/{document.id}/crdt", headers=headers)
        connected, code = await socket.connect()
        await socket.disconnect()
        return connected, code

    assert async_to_sync(scenario)() == (False, 4404)


@pytest.mark.django_db(transaction=True)
def test_compaction_keeps_the_text(document, owner):
    gulls = document.sections.get(heading="Gulls")
    peer = crdt.Peer(document.id, "test")
    for word in ["Gulls"] + [" squawk"] * 30:
        peer.append(gulls.key, word)
    before = crdt.section_texts(crdt.load(document.id), [gulls.key])
    crdt.compact(document.id)
    assert document.crdt_updates.count() == 0
    assert crdt.section_texts(crdt.load(document.id), [gulls.key]) == before


def test_a_web_server_killed_mid_edit_loses_nothing(web_server, document, owner):
    import signal

    from django.test import Client

    from tests.support.factories import PASSWORD
    from tests.support.processes import wait_for

    gulls = document.sections.get(heading="Gulls")
    client = Client()
    client.login(username=owner.username, password=PASSWORD)
    session = client.cookies["sessionid"].value

    peer = SocketPeer(web_server, document.id, session)
    peer.type(gulls.key, "Gulls nest on cliffs.")
    peer.drain()
    web_server.process.send_signal(signal.SIGKILL)  # no goodbye, no save on disconnect
    web_server.process.wait()
    peer.socket = None
    peer.type(gulls.key, " Written while the server was down.")  # an offline edit
    web_server.start()
    peer = SocketPeer(web_server, document.id, session, doc=peer.doc)  # reconnect: sync both ways
    peer.type(gulls.key, " And after.")
    peer.drain()
    peer.socket.close()

    whole = "Gulls nest on cliffs. Written while the server was down. And after."
    assert crdt.section_texts(crdt.load(document.id), [gulls.key]) == {str(gulls.key): whole}

    def saved() -> bool:
        gulls.refresh_from_db()
        return gulls.text == whole

    wait_for(saved, timeout=10)


@pytest.mark.django_db(transaction=True)
def test_replacing_text_with_characters_beyond_ascii_changes_only_what_differs(document):
    """pycrdt counts positions in UTF-8 bytes: a replace computed in characters once cut text in
    the wrong place (and panicked) after an emoji or a "≤"."""
    gulls = document.sections.get(heading="Gulls")
    peer = crdt.Peer(document.id, "test")
    for old, new in (("a😀b≤c tail", "a😀b≤c"), ("Gulls ≤ terns. ological ABC", "Gulls ≤ terns."),
                     ("naïve café", "naïve crème café"), ("😀😀", "")):
        peer.replace(gulls.key, old)
        peer.replace(gulls.key, new)
        assert peer.text(gulls.key) == new
        assert crdt.section_texts(crdt.load(document.id), [gulls.key])[str(gulls.key)] == new


@pytest.mark.django_db(transaction=True)
def test_an_outline_restore_brings_the_shared_text_back_too(document, owner):
    """A section recreated by an outline restore got its old text in its row but not in the
    shared document, so the next pause saved the newer shared text over the restored one."""
    gulls = document.sections.get(heading="Gulls")
    documents.section_save_text(section_id=gulls.id, user=owner, text="First words.", expected_version=gulls.version)
    documents.section_move(section=document.sections.get(heading="Terns"), user=owner, direction="up")
    snapshot = document.revisions.filter(outline__isnull=False).order_by("-id").first()
    gulls.refresh_from_db()
    documents.section_save_text(section_id=gulls.id, user=owner, text="Later words.", expected_version=gulls.version)
    documents.section_delete(section=document.sections.get(heading="Gulls"), user=owner)

    revisions.revision_restore(revision=snapshot, user=owner)

    restored = document.sections.get(heading="Gulls")
    assert restored.text == "First words."
    assert crdt.section_texts(crdt.load(document.id), [restored.key]) == {str(restored.key): "First words."}
    assert documents.materialise(document_id=document.id, user=owner) == []  # nothing differs, nothing is saved over it


def test_a_writer_batch_streams_all_its_sections_as_one_stored_update_per_tick(document, owner):
    """One stored update per flush for every section a batch writes (one per section made the
    task thread spend its time committing, so it fell behind the serving core)."""
    from webapp.documents.models import CrdtUpdate
    from webapp.runs.models import AgentTask, RunStatus, WritingRun
    from webapp.runs.writing import _Streamer

    run = WritingRun.objects.create(document=document, created_by=owner, status=RunStatus.WRITING)
    sections = list(document.sections.order_by("order"))[:3]
    tasks = {str(i): AgentTask.objects.create(run=run, role="writer", section=s, status="running", attempts=1)
             for i, s in enumerate(sections)}  # claimed by this writer, as a writer's tasks are
    streamer = _Streamer(run, tasks)
    stored = CrdtUpdate.objects.filter(document=document).count()
    streamer("0", "Gulls wheel")  # the first piece goes out at once
    streamer("1", "Terns dive")  # the rest wait for the next tick ...
    streamer("2", "Puffins nest")
    streamer("0", " overhead.")
    streamer.flush()  # ... and leave together
    assert CrdtUpdate.objects.filter(document=document).count() == stored + 2
    doc = crdt.load(document.pk)
    texts = [str(doc.get(crdt.section_name(s.key), type=crdt.Text)) for s in sections]
    assert texts == ["Gulls wheel overhead.", "Terns dive", "Puffins nest"]


@pytest.mark.django_db(transaction=True)
def test_a_reconnect_that_changes_nothing_stores_and_saves_nothing(document, editor, quick_pause):
    """y-websocket sends its whole state (with every deletion it knows) on each reconnect: when
    that adds nothing, no update is stored, sent or saved as a revision in the person's name."""
    from webapp.documents.models import CrdtUpdate, Revision

    gulls = document.sections.get(heading="Gulls")
    headers = session_headers(editor)

    async def scenario():
        peer = BrowserPeer(document, headers)
        await peer.connect()
        await peer.type(gulls.key, 0, "Gulls are very loud.")
        before = peer.doc.get_state()
        del peer.text(gulls.key)[9:14]  # "very ": a deletion, which every later sync carries again
        await peer.socket.send_to(bytes_data=create_update_message(peer.doc.get_update(before)))
        await asyncio.sleep(0.6)  # a pause: the text is saved
        await peer.socket.disconnect()
        counts = await sync_to_async(lambda: (CrdtUpdate.objects.count(), Revision.objects.count()))()
        peer.socket = WebsocketCommunicator(application, f"/ws/documents/{document.id}/crdt", headers=headers)
        await peer.connect()  # the same browser, back after a network blip
        await asyncio.sleep(0.6)
        await peer.socket.disconnect()
        return counts, await sync_to_async(lambda: (CrdtUpdate.objects.count(), Revision.objects.count()))()

    before, after = async_to_sync(scenario)()
    assert after == before
    gulls.refresh_from_db()
    assert gulls.text == "Gulls are loud."


@pytest.mark.django_db(transaction=True)
def test_the_server_owns_the_locks_on_sections_an_agent_is_writing(document, owner, editor, viewer, quick_pause):
    """A Yjs peer that ignores the lock (any client can) types into a section an agent is writing,
    and tries to lift the lock itself: both are undone, for it too. At the end the database, the
    shared state, every export and the history agree, each revision credited to its real author,
    and a member who merely opens the page saves nothing in their name."""
    from webapp.documents import export
    from webapp.documents.models import Revision, SectionStatus
    from webapp.runs.models import AgentTask, WritingRun
    from webapp.runs.writing import _Streamer

    gulls = document.sections.get(heading="Gulls")
    run = WritingRun.objects.create(document=document, created_by=owner, status="writing")
    task = AgentTask.objects.create(run=run, role="writer", section=gulls, status="running",
                                    base_version=gulls.version)
    editor_headers, viewer_headers = session_headers(editor), session_headers(viewer)

    async def scenario():
        streamer = await sync_to_async(_Streamer)(run, {"k": task})
        await sync_to_async(streamer)("k", "Gulls nest on roofs.")
        await sync_to_async(streamer.flush)()
        intruder = BrowserPeer(document, editor_headers)
        await intruder.connect()
        assert str(intruder.text(gulls.key)) == "Gulls nest on roofs."
        await intruder.type(gulls.key, 0, "INTRUDER ")
        before = intruder.doc.get_state()
        del intruder.doc.get(crdt.WRITERS, type=crdt.Map)[str(gulls.key)]  # lift the lock
        await intruder.socket.send_to(bytes_data=create_update_message(intruder.doc.get_update(before)))
        await intruder.drain()
        undone = str(intruder.text(gulls.key)), dict(intruder.doc.get(crdt.WRITERS, type=crdt.Map))
        await sync_to_async(streamer)("k", " They steal chips.")
        await sync_to_async(streamer.flush)()
        final = "Gulls nest on roofs. They steal chips."
        await sync_to_async(documents.section_save_text)(section_id=gulls.id, user=None, text=final,
                                                         expected_version=gulls.version, agent_role="writer",
                                                         model_version="tiny + writer@1", peer=streamer.peer)
        await sync_to_async(streamer.release)()
        await intruder.drain()
        await intruder.socket.disconnect()
        reader = BrowserPeer(document, viewer_headers)  # someone merely opens the page, then leaves
        await reader.connect()
        await asyncio.sleep(0.5)
        await reader.socket.disconnect()
        return undone, str(intruder.text(gulls.key))

    undone, intruder_final = async_to_sync(scenario)()
    assert undone[0] == "Gulls nest on roofs." and str(gulls.key) in undone[1]
    final = "Gulls nest on roofs. They steal chips."
    gulls.refresh_from_db()
    shared = crdt.section_texts(crdt.load(document.id), [gulls.key])[str(gulls.key)]
    assert gulls.text == shared == intruder_final == final and gulls.status == SectionStatus.WRITTEN
    assert final in export.document_markdown(document) and final in export.document_html(document)
    assert "INTRUDER" not in export.document_markdown(document)
    from docx import Document as DocxDocument

    docx_text = "\n".join(p.text for p in DocxDocument(io.BytesIO(export.document_docx(document))).paragraphs)
    assert final in docx_text and "INTRUDER" not in docx_text
    authors = [(r.author, r.agent_role, r.model_version) for r in Revision.objects.filter(section=gulls)]
    assert authors == [(None, "writer", "tiny + writer@1")]


@pytest.mark.django_db(transaction=True)
def test_a_person_alone_on_a_page_hears_their_own_presence(document, editor):
    """y-websocket reconnects after 30 s without a message; presence heartbeats (every 15 s) come
    back to their sender, so a lone reader's socket stays up."""
    headers = session_headers(editor)
    # An awareness message: one client (7), clock 1, state "{}": it comes back with their name on it.
    presence = bytes([1, 6, 1, 7, 1, 2]) + b"{}"

    async def scenario():
        peer = BrowserPeer(document, headers)
        await peer.connect()
        await peer.socket.send_to(bytes_data=presence)
        echoed = await peer.socket.receive_from(timeout=5)
        await peer.socket.disconnect()
        return echoed

    echoed = async_to_sync(scenario)()
    assert echoed[:5] == bytes([1, len(echoed) - 2, 1, 7, 1])
    assert json.loads(echoed[6:]) == {"user": presence_of.person(editor.username)}
