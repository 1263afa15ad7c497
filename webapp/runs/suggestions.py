"""Suggestions: people propose their own changes beside the agents', and decide on both;
accepting applies the change to the current text as the accepting person's revision; a
suggestion whose text has changed since is marked stale."""

from __future__ import annotations

import re

from django.db import transaction
from django.utils import timezone

from webapp import events
from webapp.documents import crdt
from webapp.documents import services as documents
from webapp.documents.models import Document
from webapp.runs.models import ASKED, PERSON, Suggestion, SuggestionStatus


class SuggestionOutdated(Exception):
    pass


class SuggestionRefused(ValueError):
    """A person's suggestion that cannot be made as asked (nothing selected, the words are gone)."""


ORIGINAL_MAX_CHARS = 2_000
REPLACEMENT_MAX_CHARS = 5_000


def suggestion_propose(*, section, user, original: str, replacement: str, at: int = 0,
                       reason: str = "") -> Suggestion:
    """A person's own change, proposed for others to accept or reject: `original` is the words
    they selected, near `at` (a UTF-16 offset, as the editor counts) in the section's shared
    text; the suggestion is anchored there like the reviewer's, so it follows later edits."""
    original, replacement = original.replace("\r\n", "\n"), replacement.replace("\r\n", "\n")
    if len(replacement) > REPLACEMENT_MAX_CHARS:
        raise SuggestionRefused(f"A suggestion says at most {REPLACEMENT_MAX_CHARS:,} characters; edit the text "
                                "directly, or split the change.")
    if original == replacement:
        raise SuggestionRefused("The suggestion is the same as the text: type what it should say instead.")
    anchor = selection_anchor(section, original, at)
    return saved(Suggestion(document_id=section.document_id, section=section, role=PERSON, author=user, kind="edit",
                           original=original, replacement=replacement, reason=reason[:500], anchor=anchor))


def selection_anchor(section, original: str, at: int, *, while_written: bool = False) -> dict:
    """The anchor of the words a person selected (`original`, near UTF-16 offset `at` of the
    section's shared text), for a suggestion on exactly them; refused when the words are gone,
    and while an agent writes the section unless `while_written` (a comment changes nothing)."""
    if not original.strip():
        raise SuggestionRefused("Select the words first.")
    if len(original) > ORIGINAL_MAX_CHARS:
        raise SuggestionRefused(f"Select at most {ORIGINAL_MAX_CHARS:,} characters.")
    shared = crdt.load(section.document_id)
    writer = documents.section_writer(section, shared)
    if writer is not None and not while_written:
        raise documents.SectionHeld(documents.held_message(section.heading, writer))
    text = crdt.section_text(shared, section.key)
    start = _nearest(text, original, _from_utf16(text, at))
    if start is None:
        raise SuggestionRefused(f"“{original[:80]}” is no longer in “{section.heading}”; someone changed it.")
    return crdt.Anchors(shared, section.key).make(start, start + len(original))


def saved(suggestion: Suggestion) -> Suggestion:
    """Store a new suggestion and tell the document's pages."""
    suggestion.save()
    changed(suggestion.document_id)
    return suggestion


def changed(document_id: int, *, now: bool = False) -> None:
    """The document's open suggestions changed (one added, or its text grew): pages re-read them."""
    count = Suggestion.objects.filter(document_id=document_id, status=SuggestionStatus.OPEN).count()
    events.send(events.SuggestionsChanged(document_id=document_id, open=count), now=now)


def _from_utf16(text: str, units: int) -> int:
    """The Python index of the character at `units` UTF-16 code units into `text`."""
    count = 0
    for index, char in enumerate(text):
        if count >= units:
            return index
        count += 2 if ord(char) > 0xFFFF else 1
    return len(text)


def _nearest(text: str, original: str, near: int) -> int | None:
    """Where `original` occurs in `text` closest to `near` (the selection the person made)."""
    found, start = [], text.find(original)
    while start >= 0:
        found.append(start)
        start = text.find(original, start + 1)
    return min(found, key=lambda at: abs(at - near)) if found else None


def suggestion_accept(*, suggestion: Suggestion, user) -> Suggestion:
    """Apply the change to the section's current text, as a revision by the person who accepted."""
    if suggestion.status != SuggestionStatus.OPEN:
        return suggestion
    if suggestion.kind == ASKED:  # an agent's answer still streaming in
        raise SuggestionRefused("The agent is still answering; accept once its answer is complete.")
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
    summary = f"Accepted suggestion by {suggestion.by} ({suggestion.role}): {suggestion.kind}"
    documents.section_save_text(section_id=section.id, user=user, text=text, expected_version=section.version,
                                summary=summary)
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
