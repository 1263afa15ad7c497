"""People decide on the agents' suggestions: accepting applies the change to the current text
as the person's own revision; a suggestion whose text has changed since is marked stale."""

from __future__ import annotations

import re

from django.db import transaction
from django.utils import timezone

from webapp import events
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
    if suggestion.original not in section.text:
        Suggestion.objects.filter(pk=suggestion.pk).update(status=SuggestionStatus.STALE)
        raise SuggestionOutdated("The text this suggestion refers to has changed since; it no longer applies.")
    text = section.text.replace(suggestion.original, suggestion.replacement, 1)
    text = re.sub(r"[ \t]{2,}", " ", text).strip()
    documents.section_save_text(section_id=section.id, user=user, text=text, expected_version=section.version)
    return _decide(suggestion, user, SuggestionStatus.ACCEPTED)


def suggestion_reject(*, suggestion: Suggestion, user) -> Suggestion:
    return _decide(suggestion, user, SuggestionStatus.REJECTED)


def _decide(suggestion: Suggestion, user, status: str) -> Suggestion:
    with transaction.atomic():
        suggestion.status, suggestion.decided_by, suggestion.decided_at = status, user, timezone.now()
        suggestion.save(update_fields=["status", "decided_by", "decided_at"])
        events.send(events.SuggestionDecided(document_id=suggestion.document_id, suggestion_id=suggestion.id,
                                             status=status))
    return suggestion
