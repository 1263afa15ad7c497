"""WebSocket relay of a document's events to the browsers that have it open.

Only project members may connect; everyone else is refused before the socket opens."""

from __future__ import annotations

from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncJsonWebsocketConsumer

from webapp.documents.events import document_group
from webapp.documents.models import Document


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
        await self.send_json({"type": "hello", "document_id": self.document_id, "role": role})

    async def disconnect(self, code: int) -> None:
        if hasattr(self, "group"):
            await self.channel_layer.group_discard(self.group, self.channel_name)

    async def relay_event(self, message: dict) -> None:
        await self.send_json(message["event"])
