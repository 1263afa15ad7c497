"""Workflows on documents, sections and their text (revisions.py: diffs and restores).

These are the only functions that write these rows, and every change a browser should see is
broadcast from here after commit. Views, consumers and tasks parse, authorise and call one."""

from __future__ import annotations

import logging

from django.conf import settings
from django.db import transaction
from django.db.models import F, Max
from django.utils import timezone

from agents.coordinator import outline_text
from agents.outline import PlannedSection
from webapp import events
from webapp.documents import crdt
from webapp.documents.models import (
    Document,
    Revision,
    RevisionKind,
    Section,
    SectionStatus,
)
from webapp.projects import services as projects
from webapp.projects.models import Membership, Project, Role

log = logging.getLogger(__name__)


class SectionHeld(Exception):
    """An agent is writing the section: nobody else changes it until it is done or taken over.
    Every way of changing a section's text says so in the same words (`held_message`)."""


def held_message(heading: str, writer: dict) -> str:
    agent = writer.get("name") or "An agent"
    return (f"{agent} is writing “{heading}” now. You can edit it the moment it is done, "
            "or take it over from the Agents panel.")


def section_writer(section: Section, doc=None) -> dict | None:
    """The agent writing this section now (as people's editors see it), or None."""
    writer = crdt.writers(doc if doc is not None else crdt.load(section.document_id)).get(str(section.key))
    return writer if isinstance(writer, dict) else None


class SectionConflict(Exception):
    """Someone else saved the section first. The losing text is kept as `revision`."""

    def __init__(self, section: Section, revision: Revision):
        super().__init__(
            f"“{section.heading}” was changed by someone else while you edited it. "
            "Your text was kept in the history; merge it into the current text and save again."
        )
        self.section = section
        self.revision = revision


def document_for_user(*, user, document_id: int, role: str = Role.VIEWER) -> tuple[Document, Membership]:
    """The document and the user's membership of its project: 404 for non-members, 403 for a
    role too low (the project's rule, projects.services.member_object)."""
    return projects.member_object(user=user, queryset=Document.objects.select_related("project"), pk=document_id,
                                  role=role)


# --- documents -----------------------------------------------------------------------------

BRIEF_FIELDS = ("title", "topic", "audience", "tone", "target_words", "language", "notes",
                "auto_approve_outline", "lead")


@transaction.atomic
def document_create(*, project: Project, user, **brief) -> Document:
    return Document.objects.create(project=project, created_by=user, lead_by_agent=not brief.get("lead"),
                                   **{k: v for k, v in brief.items() if k in BRIEF_FIELDS})


@transaction.atomic
def document_update_brief(*, document: Document, **brief) -> Document:
    stored_lead = Document.objects.filter(pk=document.pk).values_list("lead", flat=True).first()
    if "lead" in brief and brief["lead"].strip() != (stored_lead or "").strip():
        document.lead_by_agent = False  # a person's lead: the finisher leaves it alone from now on
    for field in BRIEF_FIELDS:
        if field in brief:
            setattr(document, field, brief[field])
    document.save()
    return document


@transaction.atomic
def document_delete(*, document: Document) -> None:
    document.delete()


# --- the outline ---------------------------------------------------------------------------

def outline_snapshot(document: Document) -> list[dict]:
    """The outline as plain data, in reading order; enough to recreate every section."""
    return [
        {
            "key": str(section.key),
            "parent_key": str(section.parent.key) if section.parent_id else None,
            "order": section.order,
            "depth": depth,
            "number": number,
            "heading": section.heading,
            "goal": section.goal,
            "key_points": section.key_points,
            "word_budget": section.word_budget,
            "pinned": section.pinned,
            "text": section.text,
        }
        for section, depth, number in document.section_tree()
    ]


def record_outline(document: Document, user, summary: str, restored_from: Revision | None = None,
                   agent_role: str = "", model_version: str = "") -> Revision:
    """The outline as it is now, as a revision (with every section's text, so a restore brings
    deleted sections back)."""
    nodes = outline_snapshot(document)
    revision = Revision.objects.create(
        document=document,
        kind=RevisionKind.RESTORE if restored_from else RevisionKind.OUTLINE,
        heading="Outline",
        content=outline_text(document.planned(), details=True),
        outline=nodes,
        author=user,
        agent_role=agent_role,
        model_version=model_version,
        summary=summary[:300],
        restored_from=restored_from,
    )
    Document.objects.filter(pk=document.pk).update(updated_at=timezone.now())
    events.send(events.OutlineChanged(document_id=document.id, revision_id=revision.id,
                                      by=user.username if user else agent_role))
    return revision


def _siblings(section: Section):
    return Section.objects.filter(document_id=section.document_id, parent_id=section.parent_id)


def _renumber(document_id: int, parent_id: int | None) -> None:
    siblings = Section.objects.filter(document_id=document_id, parent_id=parent_id).order_by("order", "id")
    for index, sibling in enumerate(siblings):
        if sibling.order != index:
            Section.objects.filter(pk=sibling.pk).update(order=index)


@transaction.atomic
def section_add(*, document: Document, user, heading: str, parent: Section | None = None,
                goal: str = "", key_points: str = "", word_budget: int = 0) -> Section:
    if parent is not None and parent.document_id != document.id:
        raise ValueError("The parent section belongs to another document.")
    last = Section.objects.filter(document=document, parent=parent).aggregate(m=Max("order"))["m"]
    section = Section.objects.create(
        document=document, parent=parent, order=0 if last is None else last + 1, heading=heading,
        goal=goal, key_points=key_points, word_budget=word_budget, updated_by=user,
    )
    record_outline(document, user, f"Added “{heading}”")
    return section


@transaction.atomic
def outline_plan(*, document: Document, planned: list[PlannedSection], agent_role: str,
                 model_version: str = "") -> Revision:
    """An agent's outline, added under the existing sections as one revision credited to the
    agent (not to the person who asked for it)."""
    def add(items: list[PlannedSection], parent: Section | None) -> None:
        for order, item in enumerate(items, start=first if parent is None else 0):
            section = Section.objects.create(document=document, parent=parent, order=order, heading=item.heading,
                                             goal=item.goal, key_points="\n".join(item.key_points),
                                             word_budget=item.words)
            add(item.children, section)

    last = Section.objects.filter(document=document, parent=None).aggregate(m=Max("order"))["m"]
    first = 0 if last is None else last + 1
    add(planned, None)
    return record_outline(document, None, f"Outline planned ({len(planned)} sections)", agent_role=agent_role,
                           model_version=model_version)


@transaction.atomic
def section_update_plan(*, section: Section, user, heading: str, goal: str, key_points: str,
                        word_budget: int, pinned: bool) -> Section:
    section.heading, section.goal, section.key_points = heading, goal, key_points
    section.word_budget, section.pinned = word_budget, pinned
    section.save(update_fields=["heading", "goal", "key_points", "word_budget", "pinned", "updated_at"])
    record_outline(section.document, user, f"Edited the plan of “{heading}”")
    return section


@transaction.atomic
def section_move(*, section: Section, user, direction: str) -> Section:
    """Move a section up or down among its siblings, or indent/outdent it in the tree."""
    document = section.document
    _renumber(document.id, section.parent_id)
    section.refresh_from_db()
    siblings = list(_siblings(section).order_by("order", "id"))
    index = next(i for i, s in enumerate(siblings) if s.pk == section.pk)
    old_parent_id = section.parent_id
    if direction in ("up", "down"):
        other = index - 1 if direction == "up" else index + 1
        if not 0 <= other < len(siblings):
            return section
        neighbour = siblings[other]
        Section.objects.filter(pk=neighbour.pk).update(order=section.order)
        section.order = neighbour.order
    elif direction == "indent":
        if index == 0:
            raise ValueError("The first section of a level cannot be indented: it has no section above it to go under.")
        new_parent = siblings[index - 1]
        last = new_parent.children.aggregate(m=Max("order"))["m"]
        section.parent, section.order = new_parent, 0 if last is None else last + 1
    elif direction == "outdent":
        if section.parent_id is None:
            raise ValueError("This section is already at the top level.")
        parent = section.parent
        # Make room right after the old parent among its siblings.
        _siblings(parent).filter(order__gt=parent.order).update(order=F("order") + 1)
        section.parent_id, section.order = parent.parent_id, parent.order + 1
    else:
        raise ValueError(f"Unknown move: {direction}")
    section.save(update_fields=["parent", "order", "updated_at"])
    _renumber(document.id, old_parent_id)
    _renumber(document.id, section.parent_id)
    record_outline(document, user, f"Moved “{section.heading}” {direction}")
    return section


@transaction.atomic
def section_delete(*, section: Section, user) -> None:
    document, parent_id, heading = section.document, section.parent_id, section.heading
    section.delete()
    _renumber(document.id, parent_id)
    # The outline revision before this one still holds the deleted sections and their text.
    record_outline(document, user, f"Deleted “{heading}” and its subsections")


# --- section text --------------------------------------------------------------------------

def _record_text(section: Section, user, kind: str, summary: str, *, agent_role: str = "",
                 model_version: str = "", restored_from: Revision | None = None) -> Revision:
    return Revision.objects.create(
        document_id=section.document_id, section=section, section_key=section.key, kind=kind,
        heading=section.heading, content=section.text, section_version=section.version,
        author=user, agent_role=agent_role, model_version=model_version, summary=summary[:300],
        restored_from=restored_from,
    )


class TextTooLong(ValueError):
    """A section's text past SECTION_TEXT_MAX_CHARS, on whatever path it came (form, editor,
    suggestion, agent, restore): refused whole, with the reason."""


def section_save_text(*, section_id: int, user, text: str, expected_version: int,
                      agent_role: str = "", model_version: str = "",
                      restored_from: Revision | None = None, from_crdt: bool = False,
                      peer: crdt.Peer | None = None, summary: str = "") -> Section:
    """Save a section's text if nobody saved it since `expected_version`.

    Whoever saves (person or agent) gets a revision. On a conflict the caller's text is kept as
    a conflict revision, committed even though the save is refused, and SectionConflict is
    raised so the caller can show both texts. The shared (CRDT) text follows, unless the text
    comes from it (`from_crdt`: a person typed it in the live editor). A caller that already
    holds the shared document passes its `peer`, so it is not loaded again for every save."""
    text = text.replace("\r\n", "\n")
    if user is not None and not agent_role and not from_crdt:  # a person's form, restore or accept
        section = Section.objects.get(pk=section_id)
        peer = peer or crdt.Peer(section.document_id, user.username)  # loaded once: checked, then written
        writer = section_writer(section, peer.doc)
        if writer is not None:
            raise SectionHeld(held_message(section.heading, writer))
    if len(text) > settings.SECTION_TEXT_MAX_CHARS:
        raise TextTooLong(f"A section holds at most {settings.SECTION_TEXT_MAX_CHARS:,} characters; "
                          f"this text has {len(text):,}. Split it into several sections.")
    with transaction.atomic():
        section = Section.objects.select_for_update().get(pk=section_id)
        if section.version == expected_version:
            _apply_text(section, user, text, agent_role, model_version, restored_from, summary)
            if not from_crdt:
                peer = peer or crdt.Peer(section.document_id, agent_role or (user.username if user else ""))
                peer.replace(section.key, section.text)
            return section
    lost = Revision.objects.create(
        document_id=section.document_id, section=section, section_key=section.key,
        kind=RevisionKind.CONFLICT, heading=section.heading, content=text,
        section_version=expected_version, author=user, agent_role=agent_role,
        model_version=model_version,
        summary=f"Not applied: based on version {expected_version}, current is {section.version}",
    )
    raise SectionConflict(section, lost)


def _apply_text(section: Section, user, text: str, agent_role: str, model_version: str,
                restored_from: Revision | None, summary: str = "") -> None:
    if text == section.text and section.status != SectionStatus.WRITING:
        return
    section.text = text
    section.version += 1
    section.updated_by = user
    if agent_role:
        section.status = SectionStatus.WRITTEN
    elif section.status != SectionStatus.WRITING:
        section.status = SectionStatus.EDITED
    section.save(update_fields=["text", "version", "updated_by", "status", "updated_at"])
    if restored_from is not None:
        kind = RevisionKind.RESTORE
        summary = f"Restored the text from {restored_from.created_at:%Y-%m-%d %H:%M}"
    else:
        kind, summary = RevisionKind.TEXT, summary or f"{len(text.split())} words"
    _record_text(section, user, kind, summary, agent_role=agent_role, model_version=model_version,
                 restored_from=restored_from)
    Document.objects.filter(pk=section.document_id).update(updated_at=timezone.now())
    events.send(events.SectionText(document_id=section.document_id, section_id=section.id, version=section.version,
                                   status=section.status, text=section.text,
                                   by=agent_role or (user.username if user else "")))


def materialise(*, document_id: int, user) -> list[int]:
    """Copy the shared text of every section whose text differs into its Section row, as a
    revision by `user` (a person paused typing). Sections an agent is writing are left to it.
    Returns the ids of the sections saved."""
    doc = crdt.load(document_id)
    busy = crdt.writers(doc)
    saved = []
    for section in Section.objects.filter(document_id=document_id):
        text = crdt.section_text(doc, section.key)
        if text != section.text and str(section.key) not in busy:
            try:
                section_save_text(section_id=section.pk, user=user, text=text, expected_version=section.version,
                                  from_crdt=True)
            except SectionConflict:
                continue  # saved by someone else meanwhile; the next pause tries again
            except TextTooLong:
                log.warning("section %s's shared text is past the length limit; not saved", section.pk)
                continue
            saved.append(section.pk)
    return saved
