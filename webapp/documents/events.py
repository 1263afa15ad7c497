"""Typed events that browsers receive about a document, and the one way to send them.

Every event goes to the channel-layer group of its document, after the transaction that caused
it commits, with a per-document sequence number so a client can notice a gap and resynchronise
from the database (the channel layer may drop messages)."""

from __future__ import annotations

import functools
import logging
from typing import Literal, TypedDict

import redis
from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from django.conf import settings
from django.db import transaction
from redis.backoff import NoBackoff
from redis.retry import Retry

log = logging.getLogger(__name__)


class SectionTextChanged(TypedDict):
    type: Literal["section.text"]
    seq: int
    document_id: int
    section_id: int
    version: int
    status: str
    text: str
    by: str


class SectionDelta(TypedDict):
    """Text a writer just generated for a section. `offset` is where it goes in the section's
    streamed text (whose saved state /documents/<id>/state/ returns), so a client that resynced
    places later deltas right, and one that sees offset > its text length knows it missed some."""
    type: Literal["section.delta"]
    seq: int
    document_id: int
    section_id: int
    run_id: int
    offset: int
    text: str


class OutlineChanged(TypedDict):
    type: Literal["outline.changed"]
    seq: int
    document_id: int
    revision_id: int
    by: str


class SourceStatusChanged(TypedDict):
    type: Literal["source.status"]
    seq: int
    project_id: int
    source_id: int
    status: str
    error: str


DocumentEvent = SectionTextChanged | SectionDelta | OutlineChanged


def document_group(document_id: int) -> str:
    return f"document-{document_id}"


def project_group(project_id: int) -> str:
    return f"project-{project_id}"


@functools.cache
def redis_client() -> redis.Redis:
    """This process's Redis client: sequence numbers here, cancel flags in webapp/llm.py.
    No retries: when Redis is down a save should not wait on it, only skip the broadcast."""
    return redis.Redis.from_url(settings.REDIS_URL, socket_timeout=2, socket_connect_timeout=1,
                                retry=Retry(NoBackoff(), 0))


def _next_seq(stream: str) -> int:
    return int(redis_client().incr(f"scriptorium:seq:{stream}"))


def current_seq(stream: str) -> int:
    """The last sequence number sent to `stream` (0 if none, or if Redis cannot be reached)."""
    try:
        return int(redis_client().get(f"scriptorium:seq:{stream}") or 0)
    except redis.RedisError:
        return 0


def send_now(group: str, event: dict) -> None:
    """Send at once, outside any transaction (streamed text that is not in the database yet)."""
    try:
        event["seq"] = _next_seq(group)
        async_to_sync(get_channel_layer().group_send)(group, {"type": "relay.event", "event": event})
    except Exception as error:  # noqa: BLE001  (a failed broadcast must never fail a saved change)
        log.warning("could not broadcast %s to %s (%s); clients resync from the database",
                    event["type"], group, error)


def broadcast_on_commit(group: str, event: dict) -> None:
    """Send `event` to `group` once the current transaction commits (at once outside one)."""
    transaction.on_commit(lambda: send_now(group, event))
