"""Writing runs and the agent tasks they consist of."""

from __future__ import annotations

import dataclasses

from django.conf import settings
from django.db import models
from django.utils import timezone

from webapp.documents.models import Document, Section


class RunStatus(models.TextChoices):
    PLANNING = "planning", "Planning"
    AWAITING_APPROVAL = "awaiting_approval", "Waiting for outline approval"
    WRITING = "writing", "Writing"
    REVIEWING = "reviewing", "Reviewing and finishing"
    DONE = "done", "Done"
    FAILED = "failed", "Failed"
    CANCELLED = "cancelled", "Cancelled"


ACTIVE = (RunStatus.PLANNING, RunStatus.AWAITING_APPROVAL, RunStatus.WRITING, RunStatus.REVIEWING)
FINAL = (RunStatus.DONE, RunStatus.FAILED, RunStatus.CANCELLED)


OUTLINE_ORIGINS = {
    "model": "planned by the chief editor",
    "model-repaired": "planned by the chief editor, headings tidied",
    "re-asked": "planned by the chief editor on a second try",
    "fallback": "a standard outline: the chief editor's plans could not be used",
    "existing": "the outline people wrote",
}


class WritingRun(models.Model):
    document = models.ForeignKey(Document, on_delete=models.CASCADE, related_name="runs")
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="+")
    status = models.CharField(max_length=20, choices=RunStatus.choices, default=RunStatus.PLANNING)
    kind = models.CharField(max_length=10, default="article",
                            choices=[("article", "The whole article"), ("section", "One section rewritten")])
    outline_path = models.CharField(max_length=20, blank=True,
                                    help_text="How the outline came about: model, model-repaired, re-asked, "
                                              "fallback, or existing (written by people).")
    outline_problems = models.JSONField(default=list, blank=True)
    batch_size = models.PositiveSmallIntegerField(default=8)
    error = models.TextField(blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]

    def __str__(self) -> str:
        return f"Run {self.pk} of {self.document}"

    def waiting_ahead(self) -> dict[int, int]:
        """For each of this run's tasks that waits: how many requests go before it. A queued task
        waits behind every queued task created before it and every request waiting in a model's
        queue; a running one, behind what its worker's serving core reported."""
        tasks = list(self.tasks.all())
        ahead = {task.pk: task.waiting_ahead for task in tasks
                 if task.status == TaskStatus.RUNNING and task.waiting_ahead is not None}
        queued = [task.pk for task in tasks if task.status == TaskStatus.QUEUED]
        if queued:
            in_cores = AgentTask.objects.filter(status=TaskStatus.RUNNING, waiting_ahead__isnull=False).count()
            for pk in queued:
                ahead[pk] = in_cores + AgentTask.objects.filter(status=TaskStatus.QUEUED, pk__lt=pk).count()
        return ahead

    @property
    def progress_summary(self) -> str:
        """The agents' states in one line ("2 writing · 1 waiting · 3 done"), over the prefetched
        tasks the panel shows."""
        counts: dict[str, int] = {}
        for task in self.tasks.all():
            label = task.progress.label.lower()
            counts[label] = counts.get(label, 0) + 1
        return " · ".join(f"{count} {label}" for label, count in counts.items()) or "No agents yet"

    @property
    def outline_origin(self) -> str:
        """How the outline came about, in a reader's words (outline_path is the code's)."""
        return OUTLINE_ORIGINS.get(self.outline_path, "")

    @property
    def elapsed_s(self) -> float:
        return ((self.finished_at or timezone.now()) - self.created_at).total_seconds()

    @property
    def tokens(self) -> int:
        return sum(task.tokens for task in self.tasks.all())

    @property
    def tokens_per_s(self) -> float:
        return self.tokens / self.elapsed_s if self.elapsed_s > 0 else 0.0


class TaskStatus(models.TextChoices):
    QUEUED = "queued", "Queued"
    RUNNING = "running", "Running"
    DONE = "done", "Done"
    FAILED = "failed", "Failed"
    CANCELLED = "cancelled", "Cancelled"
    SKIPPED = "skipped", "Skipped (pinned or written by a person)"


class TaskQuerySet(models.QuerySet):
    def unfinished(self) -> TaskQuerySet:
        """Queued or running: an agent holds, or is about to hold, the work."""
        return self.filter(status__in=[TaskStatus.QUEUED, TaskStatus.RUNNING])

    def ended_well(self) -> TaskQuerySet:
        """Done, or skipped because people's text stands (pinned or written by a person)."""
        return self.filter(status__in=[TaskStatus.DONE, TaskStatus.SKIPPED])


@dataclasses.dataclass(frozen=True)
class Progress:
    state: str  # waiting, planning, writing, revising, reviewing, finishing, stalled, or a finished TaskStatus
    label: str
    detail: str = ""
    stalled: bool = False  # a writer with no new sentence for WRITER_STALL_S: people may take over


# Why a writer's candidate sentences were refused, as the Agents panel says it (sentence_search, quality).
REFUSALS = {"repeat": "repeats", "echo": "echoes of the instructions", "meta": "talk about the writing",
            "junk": "broken sentences", "unfinished": "unfinished sentences", "off-brief": "off the brief",
            "over": "past the budget"}

ROLE_WORK = {"chief_editor": ("planning", "Planning", "the outline"),
             "reviewer": ("reviewing", "Reviewing", "the whole article"),
             "finisher": ("finishing", "Finishing", "the title and the lead")}


def pluralize(count: int) -> str:
    return "" if count == 1 else "s"


class AgentTask(models.Model):
    """One agent's job in a run: a leaf section for a writer, or the whole article for the
    reviewer and the finisher (no section)."""

    run = models.ForeignKey(WritingRun, on_delete=models.CASCADE, related_name="tasks")
    role = models.CharField(max_length=50)
    section = models.ForeignKey(Section, null=True, on_delete=models.SET_NULL, related_name="agent_tasks")
    status = models.CharField(max_length=10, choices=TaskStatus.choices, default=TaskStatus.QUEUED)
    attempts = models.PositiveSmallIntegerField(default=0)
    base_version = models.PositiveIntegerField(default=0, help_text="The section's version when writing began.")
    checkpoint_text = models.TextField(blank=True)
    heartbeat_at = models.DateTimeField(null=True, blank=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    words = models.PositiveIntegerField(default=0)
    tokens = models.PositiveIntegerField(default=0, help_text="Tokens the model generated for this task.")
    context_bytes = models.PositiveIntegerField(default=0)
    prompt = models.JSONField(default=list, blank=True,
                              help_text="The messages the agent was given (training data pairs them with the text "
                                        "people kept).")
    adapter_version = models.CharField(max_length=100, blank=True)
    waiting_ahead = models.PositiveIntegerField(
        null=True, blank=True, help_text="While its request waits for the model: how many requests are ahead of it.")
    instruction = models.TextField(blank=True, help_text="What a person asked for when regenerating.")
    error = models.TextField(blank=True)
    progressed_at = models.DateTimeField(null=True, blank=True, help_text="When its writer last kept a sentence.")
    refused_tries = models.PositiveSmallIntegerField(
        default=0, help_text="Its writer's tries in a row whose every candidate sentence was refused.")
    refused_for = models.CharField(max_length=20, blank=True, help_text="The defect most of the last refused try had.")

    objects = TaskQuerySet.as_manager()

    class Meta:
        ordering = ["run", "id"]
        indexes = [models.Index(fields=["status", "heartbeat_at"])]

    def __str__(self) -> str:
        return f"{self.role} task {self.pk} ({self.status})"

    @property
    def elapsed_s(self) -> float | None:
        """Seconds since the task was (last) claimed, until it finished; None before it began."""
        if self.started_at is None:
            return None
        return ((self.finished_at or timezone.now()) - self.started_at).total_seconds()

    @property
    def tokens_per_s(self) -> float:
        elapsed = self.elapsed_s
        return self.tokens / elapsed if elapsed else 0.0

    @property
    def progress(self) -> Progress:
        """Where this agent is, in words a person reads at a glance (the Agents panel). The panel's
        view sets `ahead` from the serving core's queue; otherwise the last one the worker saved."""
        if self.status not in (TaskStatus.QUEUED, TaskStatus.RUNNING):
            return Progress(self.status, self.get_status_display(), self.error)
        ahead = getattr(self, "ahead", self.waiting_ahead)
        if ahead is not None:
            return Progress("waiting", "Waiting for the model", f"{ahead} request{pluralize(ahead)} ahead" if ahead
                            else "next in line")
        if self.status == TaskStatus.QUEUED:
            return Progress("waiting", "Waiting", "to start")
        if self.role in ROLE_WORK:
            return Progress(*ROLE_WORK[self.role])
        since = self.progressed_at or self.started_at
        quiet = int((timezone.now() - since).total_seconds()) if since else 0
        refused = ""
        if self.refused_tries:
            why = REFUSALS.get(self.refused_for, self.refused_for.replace("-", " "))
            refused = (f"its last {self.refused_tries} tries were refused" if self.refused_tries > 1
                       else "its last try was refused") + (f" ({why})" if why else "")
        if quiet > settings.WRITER_STALL_S:
            return Progress("stalled", "No progress", f"no new sentence for {quiet // 60} min {quiet % 60} s"
                            + (f"; {refused}" if refused else ""), stalled=True)
        if refused:
            budget = self.section.word_budget if self.section else 0
            kept = f"kept {self.words:,} of {budget:,} words" if budget else f"kept {self.words:,} words"
            return Progress("revising", "Revising", f"{kept}; {refused}, writing more")
        if self.progressed_at is None:
            return Progress("writing", "Writing", "its first sentence")
        return Progress("writing", "Writing", f"last sentence {quiet} s ago")


class SuggestionStatus(models.TextChoices):
    OPEN = "open", "Open"
    ACCEPTED = "accepted", "Accepted"
    REJECTED = "rejected", "Rejected"
    STALE = "stale", "Out of date (the text changed)"


PERSON = "person"  # Suggestion.role of a change a person proposes for others to accept
ASKED, ANSWERED = "ask", "answer"  # Suggestion.kind of an agent's answer while it streams (not acceptable), and whole


def said_by(role: str, author) -> str:
    """Who wrote a suggestion or a comment, as the page says it: the person, or the agent's role."""
    if role == PERSON:
        return author.username if author else "A former member"
    return role.replace("_", " ").capitalize()


class Suggestion(models.Model):
    """A change an agent or a person proposes; only a person's accept applies it."""

    document = models.ForeignKey(Document, on_delete=models.CASCADE, related_name="suggestions")
    section = models.ForeignKey(Section, null=True, blank=True, on_delete=models.CASCADE, related_name="suggestions",
                                help_text="Empty for a change to the whole document (its title).")
    run = models.ForeignKey(WritingRun, null=True, blank=True, on_delete=models.SET_NULL, related_name="suggestions")
    role = models.CharField(max_length=50, help_text="The agent's role, or PERSON for a person's own suggestion.")
    author = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL,
                               related_name="+", help_text="The person who suggested it (role PERSON).")
    kind = models.CharField(max_length=30)
    original = models.TextField(help_text="The exact text to replace.")
    replacement = models.TextField(blank=True)
    reason = models.TextField(blank=True)
    anchor = models.JSONField(default=dict, blank=True,
                              help_text="Where `original` sits in the shared text: Yjs relative positions "
                                        "{start, end} (base64), which follow it through later edits.")
    status = models.CharField(max_length=10, choices=SuggestionStatus.choices, default=SuggestionStatus.OPEN)
    decided_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL,
                                   related_name="+")
    decided_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["section__order", "id"]

    def __str__(self) -> str:
        return f"{self.kind} suggestion on {self.section or self.document}"

    @property
    def by(self) -> str:
        """Who proposed it, as the page and the history say it."""
        return said_by(self.role, self.author)


class Comment(models.Model):
    """One remark in a thread on a passage. A thread's first comment quotes the passage and is
    anchored on it like a suggestion (it follows later edits); the others reply to it. People
    write them, and the editor agent when a person asks it to reply."""

    document = models.ForeignKey(Document, on_delete=models.CASCADE, related_name="comments")
    section = models.ForeignKey(Section, on_delete=models.CASCADE, related_name="comments")
    thread = models.ForeignKey("self", null=True, blank=True, on_delete=models.CASCADE, related_name="replies",
                               help_text="The thread's first comment; empty for that one.")
    role = models.CharField(max_length=50, default=PERSON, help_text="PERSON, or the agent's role.")
    author = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL,
                               related_name="+", help_text="Who wrote it, or who asked the agent to.")
    body = models.TextField(blank=True)
    quote = models.TextField(blank=True, help_text="The passage (a thread's first comment).")
    anchor = models.JSONField(default=dict, blank=True, help_text="Where the quote sits: as Suggestion.anchor.")
    answering = models.BooleanField(default=False, help_text="An agent's reply while it is written.")
    resolved_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL,
                                    related_name="+")
    resolved_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["id"]

    def __str__(self) -> str:
        return f"comment {self.pk} on {self.section}"

    @property
    def by(self) -> str:
        return said_by(self.role, self.author)
