"""Documents, their section tree, the revision history and the project's reference sources."""

from __future__ import annotations

import uuid

from django.conf import settings
from django.db import models

from agents.outline import Brief, PlannedSection
from webapp.projects.models import Project


class Document(models.Model):
    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="documents")
    title = models.CharField(max_length=300)
    # The brief: what the agents are asked to write.
    topic = models.TextField(help_text="What the document is about.")
    audience = models.CharField(max_length=300, blank=True)
    tone = models.CharField(max_length=200, blank=True)
    target_words = models.PositiveIntegerField(default=1500)
    language = models.CharField(max_length=50, default="English")
    notes = models.TextField(blank=True, help_text="Anything else the writers should know.")
    auto_approve_outline = models.BooleanField(default=False)
    lead = models.TextField(blank=True, help_text="The paragraph under the title that says what the article offers.")
    lead_by_agent = models.BooleanField(default=True, help_text="The finisher may rewrite the lead until a person "
                                                                "edits it.")
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-updated_at", "id"]

    def __str__(self) -> str:
        return self.title

    def section_tree(self) -> list[tuple[Section, int, str]]:
        """Every section in reading order with its depth and number ("2.1")."""
        children: dict[int | None, list[Section]] = {}
        for section in self.sections.all().order_by("order", "id"):
            children.setdefault(section.parent_id, []).append(section)
        rows: list[tuple[Section, int, str]] = []

        def walk(parent_id: int | None, depth: int, prefix: str) -> None:
            for index, section in enumerate(children.get(parent_id, []), start=1):
                number = f"{prefix}{index}"
                rows.append((section, depth, number))
                walk(section.id, depth + 1, number + ".")

        walk(None, 0, "")
        return rows

    def planned(self) -> list[PlannedSection]:
        """The outline as the agents' plain data, each section keyed by its id."""
        nodes: dict[int | None, list[PlannedSection]] = {}
        for section in self.sections.all().order_by("order", "id"):
            node = PlannedSection(heading=section.heading, goal=section.goal, key_points=section.key_point_list(),
                                  words=section.word_budget, children=nodes.setdefault(section.id, []),
                                  key=str(section.pk))
            nodes.setdefault(section.parent_id, []).append(node)
        return nodes.get(None, [])

    def brief(self) -> Brief:
        """What the agents are asked to write, with the titles of the project's ready sources."""
        titles = list(self.project.sources.filter(status="ready").values_list("title", flat=True)[:8])
        return Brief(topic=self.topic or self.title, target_words=self.target_words, audience=self.audience,
                     tone=self.tone, language=self.language, notes=self.notes, source_titles=titles)

    def word_count(self) -> int:
        """The article's words: the lead and every section."""
        return len(self.lead.split()) + sum(section.word_count() for section in self.sections.all())


class SectionStatus(models.TextChoices):
    PLANNED = "planned", "Planned"
    WRITING = "writing", "Writing"
    WRITTEN = "written", "Written"
    EDITED = "edited", "Edited by a person"


class Section(models.Model):
    document = models.ForeignKey(Document, on_delete=models.CASCADE, related_name="sections")
    parent = models.ForeignKey(
        "self", null=True, blank=True, on_delete=models.CASCADE, related_name="children"
    )
    order = models.PositiveIntegerField(default=0)
    # Stable identity across deletes and restores; revisions refer to sections by key.
    key = models.UUIDField(default=uuid.uuid4, editable=False, unique=True)
    heading = models.CharField(max_length=300)
    goal = models.TextField(blank=True)
    key_points = models.TextField(blank=True, help_text="One point per line.")
    word_budget = models.PositiveIntegerField(default=0)
    text = models.TextField(blank=True)
    status = models.CharField(max_length=10, choices=SectionStatus.choices, default=SectionStatus.PLANNED)
    pinned = models.BooleanField(default=False, help_text="Agents never overwrite pinned text.")
    citations = models.JSONField(default=list, blank=True, editable=False,
                                 help_text="The source chunk ids the writer saw as [1], [2], ...")
    # Incremented on every text change; saves carry the version they started from.
    version = models.PositiveIntegerField(default=1)
    updated_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["document", "order", "id"]
        indexes = [models.Index(fields=["document", "parent", "order"])]

    def __str__(self) -> str:
        return self.heading

    def key_point_list(self) -> list[str]:
        return [line.strip() for line in self.key_points.splitlines() if line.strip()]

    def word_count(self) -> int:
        return len(self.text.split())


class RevisionKind(models.TextChoices):
    TEXT = "text", "Text edited"
    OUTLINE = "outline", "Outline changed"
    RESTORE = "restore", "Restored"
    CONFLICT = "conflict", "Conflicting save kept"


class Revision(models.Model):
    """An immutable record of one change: a section's text, or the whole outline.

    `content` is what a person reads and diffs: the section text, or the outline written out
    as indented text. `outline` holds the structured outline snapshot for outline revisions."""

    document = models.ForeignKey(Document, on_delete=models.CASCADE, related_name="revisions")
    section = models.ForeignKey(
        Section, null=True, blank=True, on_delete=models.SET_NULL, related_name="revisions"
    )
    section_key = models.UUIDField(null=True, blank=True, db_index=True)
    kind = models.CharField(max_length=10, choices=RevisionKind.choices)
    heading = models.CharField(max_length=300, blank=True)
    content = models.TextField(blank=True)
    outline = models.JSONField(null=True, blank=True)
    section_version = models.PositiveIntegerField(null=True, blank=True)
    author = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    agent_role = models.CharField(max_length=50, blank=True)
    model_version = models.CharField(max_length=200, blank=True)
    summary = models.CharField(max_length=300, blank=True)
    restored_from = models.ForeignKey(
        "self", null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)

    class Meta:
        ordering = ["-created_at", "-id"]

    def __str__(self) -> str:
        return f"{self.get_kind_display()}: {self.heading or self.document}"

    @property
    def subject(self) -> str:
        return "Outline" if self.outline is not None else (self.heading or "Section")

    @property
    def who(self) -> str:
        if self.agent_role:
            return f"{self.agent_role} agent" + (f" ({self.model_version})" if self.model_version else "")
        return self.author.username if self.author else "unknown"


class SourceStatus(models.TextChoices):
    PENDING = "pending", "Waiting"
    PROCESSING = "processing", "Extracting text"
    READY = "ready", "Ready"
    FAILED = "failed", "Failed"


def source_upload_path(source: Source, filename: str) -> str:
    return f"sources/project-{source.project_id}/{uuid.uuid4().hex}-{filename}"


class Source(models.Model):
    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="sources")
    title = models.CharField(max_length=300)
    file = models.FileField(upload_to=source_upload_path, max_length=500)
    original_name = models.CharField(max_length=300)
    kind = models.CharField(max_length=20)
    size = models.PositiveBigIntegerField(default=0)
    status = models.CharField(max_length=12, choices=SourceStatus.choices, default=SourceStatus.PENDING)
    error = models.TextField(blank=True)
    text = models.TextField(blank=True)
    uploaded_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    processed_at = models.DateTimeField(null=True, blank=True)
    passages = models.PositiveIntegerField(default=0, help_text="Passages its text makes.")
    indexed = models.PositiveIntegerField(default=0, help_text="Passages embedded so far (indexing goes in slices).")

    class Meta:
        ordering = ["-created_at", "-id"]

    def __str__(self) -> str:
        return self.title


class SourceChunk(models.Model):
    source = models.ForeignKey(Source, on_delete=models.CASCADE, related_name="chunks")
    index = models.PositiveIntegerField()
    text = models.TextField()
    char_start = models.PositiveIntegerField()
    char_end = models.PositiveIntegerField()
    # all-MiniLM-L6-v2 vector (384 float32, normalised), for retrieval; see agents/retrieval.py.
    embedding = models.BinaryField(null=True, blank=True, editable=False)

    class Meta:
        ordering = ["source", "index"]
        constraints = [models.UniqueConstraint(fields=["source", "index"], name="one_chunk_per_index")]

    def __str__(self) -> str:
        return f"{self.source} #{self.index}"


class CrdtState(models.Model):
    """The document's shared (Yjs) state, compacted: one update holding everything up to
    `last_update_id`. Newer updates are in CrdtUpdate until the next compaction."""

    document = models.OneToOneField(Document, primary_key=True, on_delete=models.CASCADE, related_name="crdt")
    state = models.BinaryField()
    last_update_id = models.BigIntegerField(default=0)
    updated_at = models.DateTimeField(auto_now=True)

    def __str__(self) -> str:
        return f"Shared state of {self.document_id}"


class CrdtUpdate(models.Model):
    """One change to the shared state, as received (a person's edit) or made (an agent's text)."""

    id = models.BigAutoField(primary_key=True)
    document = models.ForeignKey(Document, on_delete=models.CASCADE, related_name="crdt_updates")
    update = models.BinaryField()
    origin = models.CharField(max_length=150, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["id"]

    def __str__(self) -> str:
        return f"Update {self.pk} of {self.document_id} by {self.origin or '?'}"
