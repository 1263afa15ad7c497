from __future__ import annotations

from django.urls import path

from webapp.documents.consumers import DocumentCrdtConsumer, DocumentEventsConsumer

websocket_urlpatterns = [
    path("ws/documents/<int:document_id>/events/", DocumentEventsConsumer.as_asgi()),
    path("ws/documents/<int:document_id>/crdt", DocumentCrdtConsumer.as_asgi()),
]
