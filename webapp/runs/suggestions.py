"""People decide on the agents' suggestions: accepting applies the change to the current text
as the person's own revision; a suggestion whose text has changed since is marked stale."""

from __future__ import annotations

import re

from django.db import transaction
from django.utils import timezone

from webapp import events
from webapp.documents import crdt
from webapp.documents import services as documents
from webapp.documents.models import Document
from webapp.runs.models import Suggestion, SuggestionStatus


class SuggestionOutdated(Exception):
    pass


def suggestion_accept(*, suggestion: Suggestion, user) -> Suggestion:
    """Apply the change to the section's current text, as a revision by the person who accepted."""
    if suggestion.status != SuggestionStatus.OPEN:
        return suggestion
    if suggestion.section is None:  # the title
        with transaction.atomic():
            document = Document.objects.select_for_update().get(pk=suggestion.document_id)
            if document.title != suggestion.original:
                Suggestion.objects.filter(pk=suggestion.pk).update(status=SuggestionStatus.STALE)
                raise SuggestionOutdated("The title has changed since this suggestion was made.")
            document.title = suggestion.replacement[:300]
            document.save(update_fields=["title", "updated_at"])
        return _decide(suggestion, user, SuggestionStatus.ACCEPTED)
    section = suggestion.section
    text = _applied(suggestion, section)
    if text is None:
        Suggestion.objects.filter(pk=suggestion.pk).update(status=SuggestionStatus.STALE)
        events.send(events.SuggestionDecided(document_id=suggestion.document_id, suggestion_id=suggestion.id,
                                             status=SuggestionStatus.STALE))
        raise SuggestionOutdated("The text this suggestion refers to has changed since; it no longer applies.")
    agent = suggestion.role.replace("_", " ").capitalize()
    documents.section_save_text(section_id=section.id, user=user, text=text, expected_version=section.version,
                                summary=f"Accepted suggestion by {agent} ({suggestion.role}): {suggestion.kind}")
    return _decide(suggestion, user, SuggestionStatus.ACCEPTED)


def _applied(suggestion: Suggestion, section) -> str | None:
    """The section's text with the suggestion applied where its anchor now is in the shared text,
    or None if the text it would change is no longer there as it was (never applied elsewhere)."""
    if suggestion.anchor:
        shared = crdt.load(section.document_id)
        text = crdt.section_text(shared, section.key)
        where = crdt.resolve(shared, section.key, suggestion.anchor)
        if where is None or text[where[0]:where[1]] != suggestion.original:
            return None
        text = text[:where[0]] + suggestion.replacement + text[where[1]:]
    elif suggestion.original in section.text:  # made before anchors (or on text the editor never held)
        text = section.text.replace(suggestion.original, suggestion.replacement, 1)
    else:
        return None
    return re.sub(r"[ \t]{2,}", " ", text).strip()


def suggestion_reject(*, suggestion: Suggestion, user) -> Suggestion:
    return _decide(suggestion, user, SuggestionStatus.REJECTED)


def _decide(suggestion: Suggestion, user, status: str) -> Suggestion:
    with transaction.atomic():
        suggestion.status, suggestion.decided_by, suggestion.decided_at = status, user, timezone.now()
        suggestion.save(update_fields=["status", "decided_by", "decided_at"])
        events.send(events.SuggestionDecided(document_id=suggestion.document_id, suggestion_id=suggestion.id,
                                             status=status))
    return suggestion
