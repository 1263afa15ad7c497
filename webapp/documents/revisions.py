"""Revisions: a word diff between two of them, and restoring what one recorded (itself a new
revision): a section's text, or a whole outline with the sections deleted since."""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass

from django.db import transaction

from webapp.documents import crdt
from webapp.documents.models import Document, Revision, Section
from webapp.documents.services import record_outline, section_save_text


class RestoreError(Exception):
    """A revision that cannot be restored as things stand; the message says why."""


@dataclass
class DiffPiece:
    op: str  # "same", "added" or "removed"
    text: str


def revision_diff(old: str, new: str) -> list[DiffPiece]:
    """A word-level diff that keeps white space, so prose reads naturally with marks inline.

    Changes separated only by white space are merged into one removal and one addition, so a
    rewritten phrase reads as "<del>two three</del><ins>five four</ins>", not word by word."""
    tokenize = re.compile(r"\s+|[^\s]+").findall
    a, b = tokenize(old), tokenize(new)
    opcodes = difflib.SequenceMatcher(None, a, b, autojunk=False).get_opcodes()
    pieces: list[DiffPiece] = []
    removed: list[str] = []
    added: list[str] = []

    def flush() -> None:
        if removed:
            pieces.append(DiffPiece("removed", "".join(removed)))
        if added:
            pieces.append(DiffPiece("added", "".join(added)))
        removed.clear()
        added.clear()

    for index, (op, i1, i2, j1, j2) in enumerate(opcodes):
        same = "".join(a[i1:i2])
        between_changes = (removed or added) and index + 1 < len(opcodes)
        if op == "equal" and not (between_changes and same.isspace()):
            flush()
            pieces.append(DiffPiece("same", same))
            continue
        removed.extend(a[i1:i2])
        added.extend(b[j1:j2])
    flush()
    return pieces


@transaction.atomic
def revision_restore(*, revision: Revision, user) -> Revision:
    """Bring back what a revision recorded. The restore is itself a new revision."""
    document = revision.document
    if revision.outline is not None:
        _restore_outline(document, revision.outline)
        return record_outline(document, user,
                               f"Restored the outline from {revision.created_at:%Y-%m-%d %H:%M}",
                               restored_from=revision)
    section = Section.objects.filter(document=document, key=revision.section_key).first()
    if section is None:
        raise RestoreError(
            "That section has since been deleted. Restore an outline revision from before the "
            "deletion to bring the section back, then restore its text."
        )
    if section.text == revision.content:  # restoring would change nothing and record nothing
        raise RestoreError(f"“{section.heading}” already has this text; nothing was restored.")
    section_save_text(section_id=section.id, user=user, text=revision.content,
                      expected_version=section.version, restored_from=revision)
    return section.revisions.order_by("-id").first()


def _restore_outline(document: Document, nodes: list[dict]) -> None:
    existing = {str(s.key): s for s in Section.objects.select_for_update().filter(document=document)}
    wanted = {node["key"] for node in nodes}
    by_key: dict[str, Section] = {}
    recreated = []
    for node in nodes:  # reading order: parents come before their children
        section = existing.get(node["key"])
        if section is None:  # deleted since: recreate it with the text it had then
            section = Section(document=document, key=node["key"], text=node["text"])
            recreated.append(section)
        section.parent = by_key.get(node["parent_key"]) if node["parent_key"] else None
        section.order = node["order"]
        section.heading, section.goal = node["heading"], node["goal"]
        section.key_points, section.word_budget = node["key_points"], node["word_budget"]
        section.pinned = node["pinned"]
        section.save()
        by_key[node["key"]] = section
    # Sections added after the snapshot leave the outline; their text stays in their revisions.
    for key, section in existing.items():
        if key not in wanted:
            Section.objects.filter(pk=section.pk).delete()
    if recreated:  # the shared text follows, or the next pause would save it over the restored text
        peer = crdt.Peer(document.pk, "restore")
        for section in recreated:
            peer.replace(section.key, section.text)
