"""Clients of the document's WebSockets: the session headers of a logged-in person, and a pycrdt
peer over a real socket (a browser without a page)."""

from __future__ import annotations

from django.test import Client
from pycrdt import Doc, Text, create_sync_message, create_update_message, handle_sync_message

from tests.support.factories import PASSWORD
from webapp.documents import crdt


def session_headers(user) -> list[tuple[bytes, bytes]]:
    """What a browser of `user` (None: anonymous) sends when it opens a socket."""
    headers = [(b"origin", b"http://localhost"), (b"host", b"localhost")]
    if user is not None:
        client = Client()
        client.login(username=user.username, password=PASSWORD)
        headers.append((b"cookie", f"sessionid={client.cookies['sessionid'].value}".encode()))
    return headers


class SocketPeer:
    """A pycrdt peer over a real WebSocket to a real server process (a browser without a page)."""

    def __init__(self, server, document_id: int, session: str, doc: Doc | None = None):
        from websockets.sync.client import connect

        self.doc = doc or Doc()
        url = server.url.replace("http", "ws") + f"/ws/documents/{document_id}/crdt"
        self.socket = connect(url, additional_headers={"Cookie": f"sessionid={session}", "Origin": server.url})
        step1 = self.socket.recv(timeout=10)
        self.socket.send(handle_sync_message(step1[1:], self.doc))  # what the server lacks (offline edits)
        self.socket.send(create_sync_message(self.doc))
        self.drain()

    def drain(self, quiet: float = 0.5) -> None:
        while True:
            try:
                message = self.socket.recv(timeout=quiet)
            except TimeoutError:
                return
            if message[0] == 0:
                handle_sync_message(message[1:], self.doc)

    def type(self, key, words: str) -> None:
        before = self.doc.get_state()
        text = self.doc.get(crdt.section_name(key), type=Text)
        text.insert(len(text), words)
        update = self.doc.get_update(before)
        if self.socket is not None:
            self.socket.send(create_update_message(update))
