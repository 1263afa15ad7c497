"""What browsers hear about documents and projects: one dataclass per event, and one `send()`.

Every event goes to the channel-layer group of its document (or project) with a per-group
sequence number, so a client can notice a gap and resynchronise from the database (the channel
layer may drop messages). By default an event leaves once the current transaction commits;
streamed text that is not in the database yet leaves at once."""

from __future__ import annotations

import dataclasses
import json
import logging
import re
from dataclasses import dataclass
from typing import ClassVar

import redis
from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from django.db import transaction

from webapp import redis as shared

log = logging.getLogger(__name__)


def document_group(document_id: int) -> str:
    return f"document-{document_id}"


def project_group(project_id: int) -> str:
    return f"project-{project_id}"


@dataclass(frozen=True)
class DocumentEvent:
    type: ClassVar[str]
    document_id: int

    @property
    def group(self) -> str:
        return document_group(self.document_id)


@dataclass(frozen=True)
class SectionText(DocumentEvent):
    """A section's saved text (by a person, an agent, or a restore)."""
    type: ClassVar[str] = "section.text"
    section_id: int
    version: int
    status: str
    text: str
    by: str


@dataclass(frozen=True)
class OutlineChanged(DocumentEvent):
    type: ClassVar[str] = "outline.changed"
    revision_id: int
    by: str


@dataclass(frozen=True)
class RunStatusChanged(DocumentEvent):
    type: ClassVar[str] = "run.status"
    run_id: int
    status: str
    error: str


@dataclass(frozen=True)
class RunProgress(DocumentEvent):
    """A run's numbers moved (a task claimed, words and tokens checkpointed, a queue position
    changed): pages re-read the Agents panel. At most about one a second per writing batch."""
    type: ClassVar[str] = "run.progress"
    run_id: int


@dataclass(frozen=True)
class SuggestionsChanged(DocumentEvent):
    """The open suggestions changed (the reviewer replaced its own, or a person proposed one); `open` of them now."""
    type: ClassVar[str] = "suggestions.changed"
    open: int


@dataclass(frozen=True)
class CommentsChanged(DocumentEvent):
    """A comment was added to a thread on a passage (or an agent's reply grew), or a thread was
    resolved; `open` threads now."""
    type: ClassVar[str] = "comments.changed"
    open: int


@dataclass(frozen=True)
class SuggestionDecided(DocumentEvent):
    type: ClassVar[str] = "suggestion.decided"
    suggestion_id: int
    status: str


@dataclass(frozen=True)
class DocumentFinished(DocumentEvent):
    """The finisher wrote the lead (the title comes as a suggestion)."""
    type: ClassVar[str] = "document.finished"
    lead: str


@dataclass(frozen=True)
class SourceStatusChanged:
    type: ClassVar[str] = "source.status"
    project_id: int
    source_id: int
    status: str
    error: str

    @property
    def group(self) -> str:
        return project_group(self.project_id)


Event = DocumentEvent | SourceStatusChanged

# What the events socket sends besides the events above (webapp/documents/consumers.py).
HELLO = "hello"  # on connect: the caller's role and the group's last seq
RIGHTS_CHANGED = "rights.changed"  # the caller's role changed (also the channel-layer message that says so)
NOTICE = "notice"  # a line for one person's page


def client_types() -> dict[str, str]:
    """Every message type a client of the events socket can get, by a constant's name
    (SectionText -> SECTION_TEXT). The page's JavaScript imports them from
    frontend/src/events.json, written from this by `python -m webapp.events`."""
    classes = [*DocumentEvent.__subclasses__(), SourceStatusChanged]
    names = {re.sub(r"(?<!^)(?=[A-Z])", "_", cls.__name__).upper(): cls.type for cls in classes}
    return dict(sorted((names | {"HELLO": HELLO, "RIGHTS_CHANGED": RIGHTS_CHANGED, "NOTICE": NOTICE}).items()))


def send(event: Event, *, now: bool = False) -> None:
    """Send `event` to its group once the current transaction commits (`now`: at once). A failed
    broadcast never fails the change that caused it: clients resync from the database."""
    if now:
        _send(event)
    else:
        transaction.on_commit(lambda: _send(event))


def _send(event: Event) -> None:
    try:
        message = {"type": event.type, **dataclasses.asdict(event),
                   "seq": int(shared.client().incr(f"scriptorium:seq:{event.group}"))}
        async_to_sync(get_channel_layer().group_send)(event.group, {"type": "relay.event", "event": message})
    except Exception as error:  # noqa: BLE001  (a failed broadcast must never fail a saved change)
        log.warning("could not broadcast %s to %s (%s); clients resync from the database",
                    event.type, event.group, error)


def user_group(user_id: int) -> str:
    """Every open socket of one person, whatever the document: told when their rights change."""
    return f"user-{user_id}"


def rights_changed(user_id: int) -> None:
    """The person's membership, role or session changed: once the transaction commits, each of
    their open sockets checks again what they may do, and closes if it is nothing."""
    def tell() -> None:
        try:
            async_to_sync(get_channel_layer().group_send)(user_group(user_id), {"type": RIGHTS_CHANGED})
        except Exception as error:  # noqa: BLE001  (sockets also check again every few seconds)
            log.warning("could not tell the sockets of user %s that their rights changed (%s)", user_id, error)

    transaction.on_commit(tell)


def notify(user_id: int, document_id: int, text: str, level: str = "info") -> None:
    """Say `text` on this person's pages of the document (the events socket's notice)."""
    try:
        async_to_sync(get_channel_layer().group_send)(user_group(user_id), {
            "type": NOTICE, "document_id": document_id, "level": level, "text": text})
    except Exception as error:  # noqa: BLE001  (a notice is a courtesy: the page still shows the state)
        log.warning("could not tell user %s: %s (%s)", user_id, text, error)


def current_seq(group: str) -> int:
    """The last sequence number sent to `group` (0 if none, or if Redis cannot be reached)."""
    try:
        return int(shared.client().get(f"scriptorium:seq:{group}") or 0)
    except redis.RedisError:
        return 0


if __name__ == "__main__":  # python -m webapp.events > frontend/src/events.json
    print(json.dumps(client_types(), indent=2))
