"""Issue 26: the second audit's findings, a test per property (each failed on the main it audited)."""

from __future__ import annotations

import threading

import pytest

from tests.support.factories import make_document
from webapp.runs import services
from webapp.runs.models import WritingRun


def test_the_live_regions_are_rendered_at_most_once_whatever_the_query_repeats(client, document, viewer):
    client.force_login(viewer)
    once = client.get(f"/documents/{document.id}/live/?part=body").content
    many = client.get(f"/documents/{document.id}/live/?" + "&".join(["part=body"] * 400)).content
    assert len(many) == len(once)
    everything = client.get(f"/documents/{document.id}/live/").content
    assert len(client.get(f"/documents/{document.id}/live/?" + "part=head&part=runs&part=body&" * 100).content) \
        == len(everything)


@pytest.mark.django_db(transaction=True)
def test_two_people_starting_a_run_at_the_same_moment_make_one_run(project, owner, editor):
    """The check was the view's, before the service's insert: two requests both passed it."""
    from django.db import connection

    document = make_document(project, owner)
    ready = threading.Barrier(2)
    started, refused = [], []

    def start(user) -> None:
        try:
            ready.wait()
            started.append(services.run_start(document=document, user=user))
        except services.RunRefused as error:
            refused.append(str(error))
        finally:
            connection.close()

    threads = [threading.Thread(target=start, args=(user,)) for user in (owner, editor)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert len(started) == 1 and refused == ["A run is already under way for this document; cancel it first."]
    assert WritingRun.objects.filter(document=document).count() == 1


def test_forwarded_addresses_are_trusted_only_behind_a_configured_proxy():
    """`make run` passed --proxy-headers always: uvicorn then took X-Forwarded-For from loopback,
    and a client on the machine changed it on each try to dodge the per-address log-in limit."""
    from webapp.launcher import web_args

    plain = web_args({}, "127.0.0.1", "8000")
    assert "--no-proxy-headers" in plain and "--proxy-headers" not in plain
    behind_tls = web_args({"HTTPS": "true"}, "0.0.0.0", "8000")
    assert behind_tls[-3:] == ["--proxy-headers", "--forwarded-allow-ips", "127.0.0.1"]
    named = web_args({"FORWARDED_ALLOW_IPS": "10.0.0.5"}, "0.0.0.0", "8000")
    assert named[-3:] == ["--proxy-headers", "--forwarded-allow-ips", "10.0.0.5"]


@pytest.mark.django_db(transaction=True)
def test_only_sections_live_in_the_shared_document(document, editor, owner):
    """An editor's Yjs client wrote roots that are not sections (1,000 kept in one audit test,
    megabytes outside any section, paid by every later load): such an update is refused whole."""
    import uuid

    from asgiref.sync import async_to_sync
    from channels.db import database_sync_to_async
    from channels.testing import WebsocketCommunicator
    from pycrdt import Map, Text, create_update_message

    from tests.support.sockets import session_headers
    from tests.test_shared_document_crdt import BrowserPeer
    from webapp.asgi import application
    from webapp.documents import crdt
    from webapp.documents.models import CrdtUpdate

    gulls = document.sections.get(heading="Gulls")
    headers, other_headers = session_headers(editor), session_headers(owner)

    async def scenario():
        peer, other = BrowserPeer(document, headers), BrowserPeer(document, other_headers)
        events = WebsocketCommunicator(application, f"/ws/documents/{document.id}/events/", headers=headers)
        await peer.connect()
        await other.connect()
        assert (await events.connect())[0]
        await events.receive_json_from(timeout=5)  # hello
        stored = await database_sync_to_async(CrdtUpdate.objects.count)()
        notices = []
        for write in (lambda doc: doc.get("junk", type=Text).insert(0, "x" * 50_000),
                      lambda doc: doc.get(f"section:{uuid.uuid4()}", type=Text).insert(0, "hidden"),
                      lambda doc: doc.get("notes", type=Map).update({"a": "b" * 1000})):
            before = peer.doc.get_state()
            write(peer.doc)
            await peer.socket.send_to(bytes_data=create_update_message(peer.doc.get_update(before)))
            notices.append(await events.receive_json_from(timeout=5))
        await peer.type(gulls.key, 0, "Gulls nest.")  # an edit to a section still goes through
        await peer.drain()
        await other.drain()
        after = await database_sync_to_async(CrdtUpdate.objects.count)()
        await events.disconnect()
        await peer.socket.disconnect()
        await other.socket.disconnect()
        return notices, stored, after, set(other.doc), str(other.text(gulls.key))

    notices, stored, after, seen, gulls_text = async_to_sync(scenario)()
    assert [n["text"] for n in notices] == ["That change was refused: it wrote outside the document's sections."] * 3
    assert after == stored + 1  # only the section edit was kept
    assert gulls_text == "Gulls nest." and not any(name == "junk" or name == "notes" for name in seen)
    assert set(crdt.load(document.id)) <= {crdt.section_name(s.key) for s in document.sections.all()} | {crdt.WRITERS}
