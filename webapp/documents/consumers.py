"""WebSockets of a document: the relay of its events, and the shared (CRDT) document itself.

Only project members may connect; everyone else is refused before the socket opens."""

from __future__ import annotations

import asyncio
import logging

from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncJsonWebsocketConsumer
from pycrdt import (
    Decoder,
    YMessageType,
    YSyncMessageType,
    create_sync_message,
    create_update_message,
    handle_sync_message,
)
from pycrdt.websocket.django_channels_consumer import YjsConsumer

from webapp.documents import crdt, services
from webapp.documents.models import Document
from webapp.events import current_seq, document_group

log = logging.getLogger(__name__)
PAUSE_S = 2.0  # a person who stopped typing this long gets their text saved (and a revision)
MESSAGE_QUERY_AWARENESS = 3  # y-protocols: "send me your presence again"


@database_sync_to_async
def _member_role(user, document_id: int) -> str | None:
    document = Document.objects.select_related("project").filter(pk=document_id).first()
    return document.project.role_of(user) if document else None


class DocumentEventsConsumer(AsyncJsonWebsocketConsumer):
    async def connect(self) -> None:
        self.document_id = int(self.scope["url_route"]["kwargs"]["document_id"])
        user = self.scope.get("user")
        role = await _member_role(user, self.document_id) if user and user.is_authenticated else None
        if role is None:
            await self.close(code=4404)
            return
        self.group = document_group(self.document_id)
        await self.channel_layer.group_add(self.group, self.channel_name)
        await self.accept()
        # The last event number sent: a page rendered before it missed something and re-reads.
        seq = await asyncio.to_thread(current_seq, self.group)
        await self.send_json({"type": "hello", "document_id": self.document_id, "role": role, "seq": seq})

    async def disconnect(self, code: int) -> None:
        if hasattr(self, "group"):
            await self.channel_layer.group_discard(self.group, self.channel_name)

    async def relay_event(self, message: dict) -> None:
        await self.send_json(message["event"])


class DocumentCrdtConsumer(YjsConsumer):
    """The shared document over the y-websocket protocol, for Yjs in the browser.

    Built on pycrdt-websocket's consumer, changed where a shared, stored document needs it: the
    document is loaded from the database (after joining the group, so no update falls between
    the two); a client's sync request is answered to that client only; a client's updates are
    stored, applied here and sent to the group, and updates from the group (other browsers,
    agents) are applied here too, so this copy stays whole; viewers' updates are dropped (their
    editor is read-only, and the server does not trust that); a section an agent is writing is
    locked here, not only in the browser (an edit to it, or to the locks, is undone at once,
    for the sender too; "Take over" is the way in); an update that changes nothing (a
    reconnecting client's whole state) is neither stored nor sent; and when the person pauses, the
    sections they changed are saved to the database with a revision."""

    def make_room_name(self) -> str:
        return crdt.group(self.document_id)

    async def make_ydoc(self):
        return await database_sync_to_async(crdt.load)(self.document_id)

    async def connect(self) -> None:
        self.document_id = int(self.scope["url_route"]["kwargs"]["document_id"])
        self.user = self.scope.get("user")
        role = await _member_role(self.user, self.document_id) if self.user and self.user.is_authenticated else None
        if role is None:
            await self.close(code=4404)
            return
        self.can_edit = role in ("owner", "editor")
        self.room_name = self.make_room_name()
        self._pending_save: asyncio.Task | None = None
        await self.channel_layer.group_add(self.room_name, self.channel_name)
        self.ydoc = await self.make_ydoc()
        self._changes = 0  # transactions that changed this copy (pycrdt reports only real changes)
        self.ydoc.observe(self._count_change)
        await self.accept()
        await self.send(bytes_data=create_sync_message(self.ydoc))
        await self._to_others({"type": "crdt.awareness", "message": bytes([MESSAGE_QUERY_AWARENESS])})

    async def disconnect(self, code) -> None:
        if getattr(self, "room_name", None):
            await self.channel_layer.group_discard(self.room_name, self.channel_name)
        if getattr(self, "_pending_save", None) and not self._pending_save.done():
            self._pending_save.cancel()
            await self._save()  # the person left: save now

    async def receive(self, text_data=None, bytes_data=None) -> None:
        if not bytes_data:
            return
        if bytes_data[0] == YMessageType.AWARENESS:
            # To everyone, the sender too, as y-websocket's own server does: a person alone on a
            # page hears their presence heartbeat (every 15 s), so their client never takes the
            # silence for a dead connection (it reconnects after 30 s without a message).
            await self.channel_layer.group_send(self.room_name, {"type": "crdt.awareness", "message": bytes_data})
            return
        if bytes_data[0] == MESSAGE_QUERY_AWARENESS:
            await self._to_others({"type": "crdt.awareness", "message": bytes_data})
            return
        if bytes_data[0] != YMessageType.SYNC:
            return
        kind = bytes_data[1]
        if kind == YSyncMessageType.SYNC_STEP1:
            reply = handle_sync_message(bytes_data[1:], self.ydoc)
            if reply is not None:
                await self.send(bytes_data=reply)
            return
        if not self.can_edit:
            log.info("dropped an edit from viewer %s on document %s", self.user, self.document_id)
            return
        update = Decoder(bytes_data[2:]).read_message()
        if update == crdt.EMPTY_UPDATE:
            return
        changes = self._changes
        held, texts = crdt.locked(self.ydoc)
        self.ydoc.apply_update(update)
        if self._changes == changes:
            return  # known already (a reconnecting client re-sends its state): nothing to store or save
        correction = crdt.undo_locked_changes(self.ydoc, held, texts)
        await database_sync_to_async(crdt.store)(self.document_id, update, self.user.username)
        await self._to_others({"type": "crdt.update", "update": update})
        if correction is not None:
            # The server owns the locks: an edit to a section an agent is writing (or to the
            # locks themselves) is undone, for everyone and for the client that made it.
            log.info("undid %s's edit of a locked section of document %s", self.user, self.document_id)
            await database_sync_to_async(crdt.store)(self.document_id, correction, "locks")
            await self._to_others({"type": "crdt.update", "update": correction})
            await self.send(bytes_data=create_update_message(correction))
        if self._pending_save and not self._pending_save.done():
            self._pending_save.cancel()
        self._pending_save = asyncio.ensure_future(self._save_after_pause())

    def _count_change(self, event) -> None:
        self._changes += 1

    async def _to_others(self, message: dict) -> None:
        await self.channel_layer.group_send(self.room_name, message | {"sender": self.channel_name})

    async def crdt_update(self, message: dict) -> None:
        if message.get("sender") == self.channel_name:
            return
        self.ydoc.apply_update(message["update"])
        await self.send(bytes_data=create_update_message(message["update"]))

    async def crdt_awareness(self, message: dict) -> None:
        if message.get("sender") != self.channel_name:
            await self.send(bytes_data=message["message"])

    async def _save_after_pause(self) -> None:
        await asyncio.sleep(PAUSE_S)
        await self._save()

    async def _save(self) -> None:
        try:
            await database_sync_to_async(services.materialise)(document_id=self.document_id, user=self.user)
        except Exception:  # noqa: BLE001  (the updates are stored; the next pause saves again)
            log.exception("could not save the shared text of document %s", self.document_id)
