"""WebSockets of a document: the relay of its events, and the shared (CRDT) document itself.

Only project members may connect; everyone else is refused before the socket opens. Rights follow
the person after that too: each socket joins its person's group ("user-<id>"), told when their
membership, role or session changes (`events.rights_changed`), and checks again at least every
RECHECK_S while it relays or receives anything. A socket whose rights ended stops relaying and
closes with RIGHTS_ENDED; one demoted to viewer stops writing."""

from __future__ import annotations

import asyncio
import logging
import time

from asgiref.sync import sync_to_async
from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncJsonWebsocketConsumer
from django.conf import settings
from pycrdt import (
    Decoder,
    YMessageType,
    YSyncMessageType,
    create_sync_message,
    create_update_message,
    handle_sync_message,
)
from pycrdt.websocket.django_channels_consumer import YjsConsumer

from webapp import events
from webapp.documents import crdt, presence, services
from webapp.documents.models import Document, Section
from webapp.events import current_seq, document_group, user_group

log = logging.getLogger(__name__)
PAUSE_S = 2.0  # a person who stopped typing this long gets their text saved (and a revision)
MESSAGE_QUERY_AWARENESS = 3  # y-protocols: "send me your presence again"
RECHECK_S = 5.0  # rights are checked again at least this often while a socket is busy
LARGE_UPDATE_BYTES = 4096  # updates this big keep the texts before them, to undo a paste whole
NOT_A_MEMBER, RIGHTS_ENDED = 4404, 4403  # close codes: refused at the door; removed, or logged out


@database_sync_to_async
def _member_role(user, document_id: int) -> str | None:
    document = Document.objects.select_related("project").filter(pk=document_id).first()
    return document.project.role_of(user) if document else None


@database_sync_to_async
def _current_role(session_key: str | None, user_id: int, document_id: int) -> str | None:
    """The person's role on the document now, if the session that opened the socket is still
    theirs (not logged out, not ended by a password change) and they are still active."""
    from importlib import import_module

    from django.conf import settings
    from django.contrib.auth import HASH_SESSION_KEY, SESSION_KEY, get_user_model
    from django.utils.crypto import constant_time_compare

    if not session_key:
        return None
    data = import_module(settings.SESSION_ENGINE).SessionStore(session_key).load()
    user = get_user_model().objects.filter(pk=user_id, is_active=True).first()
    if user is None or str(data.get(SESSION_KEY)) != str(user_id) \
            or not constant_time_compare(data.get(HASH_SESSION_KEY, ""), user.get_session_auth_hash()):
        return None
    document = Document.objects.select_related("project").filter(pk=document_id).first()
    return document.project.role_of(user) if document else None


class _Rights:
    """What both consumers do to keep a socket's rights current. `rights_groups()` names the groups to
    leave when rights end; `role_changed(role)` is told the new role when it changes."""

    async def watch_rights(self, role: str) -> None:
        self.role, self.revoked, self.checked_at = role, False, time.monotonic()
        self.user_group = user_group(self.scope["user"].pk)
        await self.channel_layer.group_add(self.user_group, self.channel_name)

    async def rights_changed(self, message: dict) -> None:
        await self.check_rights()

    async def rights_hold(self) -> bool:
        """False once rights ended; checks again when the last check is older than RECHECK_S."""
        if self.revoked:
            return False
        if time.monotonic() - self.checked_at >= RECHECK_S:
            await self.check_rights()
        return not self.revoked

    async def check_rights(self) -> None:
        if self.revoked:
            return
        session = self.scope.get("session")
        role = await _current_role(getattr(session, "session_key", None), self.scope["user"].pk, self.document_id)
        self.checked_at = time.monotonic()
        if role is None:
            self.revoked = True
            for group in (*self.rights_groups(), self.user_group):
                await self.channel_layer.group_discard(group, self.channel_name)
            log.info("closed a socket of %s on document %s: their rights ended", self.scope["user"], self.document_id)
            await self.close(code=RIGHTS_ENDED)
        elif role != self.role:
            self.role = role
            await self.role_changed(role)

    async def notice(self, message: dict) -> None:
        """A word for this person's page (the events socket says it; the editor's does not)."""

    async def leave_rights(self) -> None:
        if getattr(self, "user_group", None):
            await self.channel_layer.group_discard(self.user_group, self.channel_name)


class DocumentEventsConsumer(_Rights, AsyncJsonWebsocketConsumer):
    async def connect(self) -> None:
        self.document_id = int(self.scope["url_route"]["kwargs"]["document_id"])
        user = self.scope.get("user")
        role = await _member_role(user, self.document_id) if user and user.is_authenticated else None
        if role is None:
            await self.close(code=NOT_A_MEMBER)
            return
        self.group = document_group(self.document_id)
        await self.channel_layer.group_add(self.group, self.channel_name)
        await self.watch_rights(role)
        await self.accept()
        # The last event number sent: a page rendered before it missed something and re-reads.
        seq = await asyncio.to_thread(current_seq, self.group)
        await self.send_json({"type": events.HELLO, "document_id": self.document_id, "role": role, "seq": seq})

    def rights_groups(self) -> list[str]:
        return [self.group]

    async def role_changed(self, role: str) -> None:
        await self.send_json({"type": events.RIGHTS_CHANGED, "role": role})  # the page redraws for the new role

    async def disconnect(self, code: int) -> None:
        if hasattr(self, "group"):
            await self.channel_layer.group_discard(self.group, self.channel_name)
        await self.leave_rights()

    async def relay_event(self, message: dict) -> None:
        if await self.rights_hold():
            await self.send_json(message["event"])

    async def notice(self, message: dict) -> None:
        """Something the server refused from this person's editor, said on their page."""
        if message.get("document_id") == self.document_id and await self.rights_hold():
            await self.send_json({"type": events.NOTICE, "level": message.get("level", "info"),
                                  "text": message["text"]})


class DocumentCrdtConsumer(_Rights, YjsConsumer):
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
            await self.close(code=NOT_A_MEMBER)
            return
        self.can_edit = role in ("owner", "editor")
        self.room_name = self.make_room_name()
        self._pending_save: asyncio.Task | None = None
        self.client_ids: set[int] = set()  # the Yjs clients this socket speaks for (presence)
        self.presence_claim = presence.claimer(self.document_id, self.user.pk)
        await self.channel_layer.group_add(self.room_name, self.channel_name)
        await self.watch_rights(role)
        self.ydoc = await self.make_ydoc()
        self._changes = 0  # transactions that changed this copy (pycrdt reports only real changes)
        self.ydoc.observe(self._count_change)
        await self.accept()
        await self.send(bytes_data=create_sync_message(self.ydoc))
        await self._to_others({"type": "crdt.awareness", "message": bytes([MESSAGE_QUERY_AWARENESS])})

    def rights_groups(self) -> list[str]:
        return [self.room_name]

    async def role_changed(self, role: str) -> None:
        self.can_edit = role in ("owner", "editor")

    async def disconnect(self, code) -> None:
        if getattr(self, "room_name", None):
            await self.channel_layer.group_discard(self.room_name, self.channel_name)
        await self.leave_rights()
        if getattr(self, "_pending_save", None) and not self._pending_save.done():
            self._pending_save.cancel()
            await self._save()  # the person left (or lost their rights after typing): save what they typed

    async def receive(self, text_data=None, bytes_data=None) -> None:
        if not bytes_data or not await self.rights_hold():
            return
        if bytes_data[0] == YMessageType.AWARENESS:
            # Presence says who the sender is, so the server writes it: their real name and
            # colour, for the Yjs clients this socket speaks for only. To everyone, the sender
            # too, as y-websocket's own server does: a person alone on a page hears their
            # presence heartbeat (every 15 s), so their client never takes the silence for a dead
            # connection (it reconnects after 30 s without a message).
            message = await sync_to_async(presence.rewrite, thread_sensitive=False)(
                bytes_data, self.scope["user"].username, self.client_ids, self.presence_claim)
            if message is not None:
                await self.channel_layer.group_send(self.room_name, {"type": "crdt.awareness", "message": message})
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
        if update != crdt.EMPTY_UPDATE:
            await self._edit(update)

    async def _edit(self, update: bytes) -> None:
        """An editor's update: applied, checked (sections only, locks, lengths), stored, relayed,
        corrected where it broke a rule, and saved after the person's pause."""
        changes = self._changes
        held, texts = crdt.locked(self.ydoc)
        # A big update (a paste) may push a section past its length: then it is refused whole.
        before = crdt.all_section_texts(self.ydoc) if len(update) > LARGE_UPDATE_BYTES else None
        names = set(self.ydoc)
        self.ydoc.apply_update(update)
        if self._changes == changes:
            return  # known already (a reconnecting client re-sends its state): nothing to store or save
        stray = set(self.ydoc) - names
        if stray and not await database_sync_to_async(crdt.only_sections)(self.document_id, stray):
            # Only the document's sections (and the server's locks) live in the shared document:
            # an update that writes anywhere else is refused whole (never stored nor relayed),
            # and this copy is loaded again without it.
            log.info("refused %s's update of document %s: it wrote outside its sections", self.user,
                     self.document_id)
            self.ydoc = await self.make_ydoc()
            self.ydoc.observe(self._count_change)
            await self._notice("That change was refused: it wrote outside the document's sections.")
            return
        locks, refused = crdt.undo_locked_changes(self.ydoc, held, texts)
        limits, too_long = crdt.limit_lengths(self.ydoc, settings.SECTION_TEXT_MAX_CHARS, before)
        await database_sync_to_async(crdt.store)(self.document_id, update, self.user.username)
        await self._to_others({"type": "crdt.update", "update": update})
        # The server owns the locks: an edit to a section an agent is writing (or to the locks
        # themselves) is undone, for everyone and for the client that made it; so is text past a
        # section's length.
        for correction, origin in ((locks, "locks"), (limits, "limits")):
            if correction is not None:
                log.info("undid %s's edit of document %s (%s)", self.user, self.document_id, origin)
                await database_sync_to_async(crdt.store)(self.document_id, correction, origin)
                await self._to_others({"type": "crdt.update", "update": correction})
                await self.send(bytes_data=create_update_message(correction))
        if refused:  # the same words as the form, a restore or an accept get
            await self._notice(await database_sync_to_async(self._held_message)(refused[0], held[refused[0]]))
        if too_long:
            await self._notice(f"A section holds at most {settings.SECTION_TEXT_MAX_CHARS:,} characters: "
                               "that change was undone. Split the text into several sections.")
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
        if await self.rights_hold():
            await self.send(bytes_data=create_update_message(message["update"]))

    async def crdt_awareness(self, message: dict) -> None:
        if message.get("sender") != self.channel_name and await self.rights_hold():
            await self.send(bytes_data=message["message"])

    async def _notice(self, text: str) -> None:
        """Tell this person (every page of theirs) why their edit was undone."""
        await self.channel_layer.group_send(self.user_group, {
            "type": events.NOTICE, "document_id": self.document_id, "level": "error", "text": text})

    def _held_message(self, key: str, writer: dict) -> str:
        heading = Section.objects.filter(document_id=self.document_id, key=key).values_list(
            "heading", flat=True).first()
        return services.held_message(heading or "this section", writer)

    async def _save_after_pause(self) -> None:
        await asyncio.sleep(PAUSE_S)
        await self._save()

    async def _save(self) -> None:
        try:
            await database_sync_to_async(services.materialise)(document_id=self.document_id, user=self.user)
        except Exception:  # noqa: BLE001  (the updates are stored; the next pause saves again)
            log.exception("could not save the shared text of document %s", self.document_id)
