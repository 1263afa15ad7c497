"""Writing runs: plan the outline, let people approve it, write the leaf sections on the agents
queue in batches, checkpoint as text streams, and survive a worker that dies mid-section.

A run is finished by whichever batch completes last (not by a Celery chord): a chord member on a
killed worker stays unacknowledged in Redis until the visibility timeout (hours), which would hold
the whole run; here a batch given to another worker finishes the run as soon as it is done."""

from __future__ import annotations

import logging
import os
import re
import time
from datetime import timedelta

from django.conf import settings
from django.db import transaction
from django.db.models import F, Q
from django.utils import timezone

from agents.llm.types import BULK, INTERACTIVE
from agents.outline import Brief, PlannedSection, split_for_writers
from agents.roles import chief_editor, finisher, reviewer, section_writer
from webapp import llm
from webapp.documents import crdt
from webapp.documents import services as documents
from webapp.documents.events import broadcast_on_commit, document_group, redis_client, send_now
from webapp.documents.models import Document, Section, SectionStatus
from webapp.registry import services as registry
from webapp.runs.models import AgentTask, RunStatus, Suggestion, SuggestionStatus, TaskStatus, WritingRun

log = logging.getLogger(__name__)

CHECKPOINT_EVERY_S = 1.0  # database checkpoint of streamed text
BROADCAST_EVERY_S = 0.1  # at most about ten delta messages a second per section


def brief_of(document: Document) -> Brief:
    titles = list(document.project.sources.filter(status="ready").values_list("title", flat=True)[:8])
    return Brief(topic=document.topic or document.title, target_words=document.target_words,
                 audience=document.audience, tone=document.tone, language=document.language,
                 notes=document.notes, source_titles=titles)


def outline_text(document: Document) -> str:
    return "\n".join(f"{'  ' * depth}{number}. {s.heading} ({s.word_budget} words)"
                     for s, depth, number in document.section_tree())


def _broadcast_run(run: WritingRun) -> None:
    broadcast_on_commit(document_group(run.document_id), {
        "type": "run.status", "document_id": run.document_id, "run_id": run.id, "status": run.status,
        "error": run.error})


def _set_status(run: WritingRun, status: str, error: str = "") -> None:
    run.status, run.error = status, error
    fields = ["status", "error"]
    if status in (RunStatus.DONE, RunStatus.FAILED, RunStatus.CANCELLED):
        run.finished_at = timezone.now()
        fields.append("finished_at")
    run.save(update_fields=fields)
    _broadcast_run(run)


# --- starting and planning -----------------------------------------------------------------

@transaction.atomic
def run_start(*, document: Document, user, batch_size: int = 8) -> WritingRun:
    from webapp.runs.tasks import plan_run

    run = WritingRun.objects.create(document=document, created_by=user, batch_size=batch_size)
    _broadcast_run(run)
    transaction.on_commit(lambda: plan_run.delay(run.id))
    return run


def _add_planned(document: Document, user, planned: list[PlannedSection], parent: Section | None) -> None:
    for item in planned:
        section = documents.section_add(document=document, user=user, parent=parent, heading=item.heading,
                                        goal=item.goal, key_points="\n".join(item.key_points),
                                        word_budget=item.words)
        _add_planned(document, user, item.children, section)


def run_plan(*, run_id: int) -> WritingRun:
    """The chief editor's outline, unless people already wrote one; then approval or writing."""
    run = WritingRun.objects.select_related("document").get(pk=run_id)
    if run.status != RunStatus.PLANNING:
        return run  # a redelivered task: planning happened already
    document = run.document
    if document.sections.exists():
        run.outline_path = "existing"
    else:
        result = chief_editor.plan_outline(llm.for_run(chief_editor.ROLE, run.pk, INTERACTIVE), brief_of(document),
                                           registry.resolve_adapter(chief_editor.ROLE))
        sections = split_for_writers(result.sections, settings.SECTION_MAX_WORDS)
        with transaction.atomic():
            _add_planned(document, run.created_by, sections, None)
        run.outline_path, run.outline_problems = result.path, result.problems
    run.save(update_fields=["outline_path", "outline_problems"])
    if document.auto_approve_outline:
        return run_approve(run=run)
    with transaction.atomic():
        _set_status(run, RunStatus.AWAITING_APPROVAL)
    return run


# --- writing -------------------------------------------------------------------------------

def _writable(section: Section) -> bool:
    """Agents never overwrite pinned text or text a person wrote."""
    return not section.pinned and not (section.status == SectionStatus.EDITED and section.text.strip())


@transaction.atomic
def run_approve(*, run: WritingRun) -> WritingRun:
    from webapp.runs.tasks import write_batch

    run = WritingRun.objects.select_for_update().get(pk=run.pk)
    if run.status not in (RunStatus.PLANNING, RunStatus.AWAITING_APPROVAL):
        return run
    tree = [section for section, _, _ in run.document.section_tree()]
    parents = {section.parent_id for section in tree}
    leaves = [section for section in tree if section.id not in parents]
    tasks = []
    for section in leaves:
        status = TaskStatus.QUEUED if _writable(section) else TaskStatus.SKIPPED
        tasks.append(AgentTask(run=run, role=section_writer.ROLE, section=section, status=status,
                               base_version=section.version))
    AgentTask.objects.bulk_create(tasks)
    _set_status(run, RunStatus.WRITING)
    queued = list(run.tasks.filter(status=TaskStatus.QUEUED).values_list("id", flat=True))
    batches = [queued[i:i + run.batch_size] for i in range(0, len(queued), run.batch_size)]
    transaction.on_commit(lambda: [write_batch.delay(run.id, batch) for batch in batches])
    transaction.on_commit(_watch)
    if not batches:
        transaction.on_commit(lambda: finish_if_done(run_id=run.id))
    return run


class RegenerateRefused(Exception):
    pass


@transaction.atomic
def section_regenerate(*, section: Section, user, instruction: str = "") -> WritingRun:
    """Write one section again, following a person's instruction. Its current text stays in the
    history. Pinned sections are refused: unpin first."""
    from webapp.runs.tasks import write_batch

    if section.pinned:
        raise RegenerateRefused(f"“{section.heading}” is pinned; unpin it to let an agent rewrite it.")
    if section.children.exists():
        raise RegenerateRefused(f"“{section.heading}” has subsections; regenerate those instead.")
    if AgentTask.objects.filter(section=section, status__in=[TaskStatus.QUEUED, TaskStatus.RUNNING]).exists():
        raise RegenerateRefused(f"“{section.heading}” is being written already.")
    run = WritingRun.objects.create(document=section.document, created_by=user, status=RunStatus.WRITING,
                                    kind="section", outline_path="existing", batch_size=1)
    task = AgentTask.objects.create(run=run, role=section_writer.ROLE, section=section,
                                    base_version=section.version, instruction=instruction[:2000])
    _broadcast_run(run)
    transaction.on_commit(lambda: write_batch.delay(run.id, [task.id]))
    transaction.on_commit(_watch)
    return run


def _watch() -> None:
    """Make sure a watcher looks for dead writers while this run writes (it stops by itself)."""
    from webapp.runs.tasks import watch_runs

    watch_runs.apply_async(countdown=settings.WRITER_STALE_S)


def _claim(task_ids: list[int]) -> list[AgentTask]:
    """Take the tasks nobody is working on (queued, or running with a stale heartbeat)."""
    stale = timezone.now() - timedelta(seconds=settings.WRITER_STALE_S)
    claimed = []
    for task_id in task_ids:
        updated = AgentTask.objects.filter(
            Q(status=TaskStatus.QUEUED) | Q(status=TaskStatus.RUNNING, heartbeat_at__lt=stale), pk=task_id,
        ).update(status=TaskStatus.RUNNING, heartbeat_at=timezone.now(), started_at=timezone.now(),
                 attempts=F("attempts") + 1)
        if updated:
            claimed.append(AgentTask.objects.select_related("section", "run__document__project").get(pk=task_id))
    return claimed


def _cancel_key(run: WritingRun) -> str:
    # With the creation time, so that a run with a reused id (a new database) never sees the
    # flag of an old run.
    return f"scriptorium:cancel-run:{run.pk}:{run.created_at.timestamp()}"


def _task_cancel_key(task: AgentTask) -> str:
    return f"scriptorium:cancel-task:{task.pk}:{task.run.created_at.timestamp()}"


class TakeOverRefused(Exception):
    pass


def section_take_over(*, section: Section, user) -> AgentTask:
    """A person takes over a section an agent is writing: the writer stops at its next step, the
    text so far stays, the section unlocks at once, and the rest of the run goes on."""
    task = AgentTask.objects.filter(section=section, role=section_writer.ROLE,
                                    status__in=[TaskStatus.QUEUED, TaskStatus.RUNNING]).select_related("run").first()
    if task is None:
        raise TakeOverRefused(f"No agent is writing “{section.heading}”.")
    redis_client().set(_task_cancel_key(task), user.username, ex=24 * 3600)
    AgentTask.objects.filter(pk=task.pk, status=TaskStatus.QUEUED).update(
        status=TaskStatus.SKIPPED, error=f"Taken over by {user.username}.")
    crdt.Peer(section.document_id, user.username).set_writer(section.key, None)
    return task


def run_cancel(*, run: WritingRun) -> WritingRun:
    """Stop a run: writers stop at their next decode step and keep what they wrote."""
    redis_client().set(_cancel_key(run), 1, ex=24 * 3600)
    with transaction.atomic():
        run = WritingRun.objects.select_for_update().get(pk=run.pk)
        if run.status in (RunStatus.DONE, RunStatus.FAILED, RunStatus.CANCELLED):
            return run
        run.tasks.filter(status=TaskStatus.QUEUED).update(status=TaskStatus.CANCELLED)
        _set_status(run, RunStatus.CANCELLED)
        _release_sections(run)
    return run


def _release_sections(run: WritingRun) -> None:
    """Unlock the run's sections in people's editors (a dead worker cannot do it itself)."""
    keys = list(run.tasks.filter(role=section_writer.ROLE, section__isnull=False)
                .values_list("section__key", flat=True))
    if keys:
        peer = crdt.Peer(run.document_id, section_writer.ROLE)
        for key in keys:
            peer.set_writer(key, None)


class _Streamer:
    """Collects streamed text per section: broadcasts coalesced deltas, checkpoints every second,
    and writes the text into the shared document as a peer (people's editors show it as it comes,
    and lock the section while the agent writes)."""

    def __init__(self, run: WritingRun, tasks: dict[str, AgentTask]):
        self.run, self.tasks = run, tasks
        self.text = {key: task.checkpoint_text for key, task in tasks.items()}
        self.peer = crdt.Peer(run.document_id, section_writer.ROLE)
        for key, task in tasks.items():
            self.peer.set_writer(task.section.key, {"name": "Section writer", "role": section_writer.ROLE,
                                                    "run": run.pk, "color": "#8e24aa"})
            self.peer.replace(task.section.key, self.text[key])  # a rewrite starts from its checkpoint
        self.unsent = {key: "" for key in tasks}
        self.tokens = {key: 0 for key in tasks}
        self.last_sent = 0.0
        self.last_saved = time.monotonic()

    def __call__(self, key: str, piece: str) -> None:
        self.text[key] += piece
        self.tokens[key] += 1  # the engine streams one token's text per call
        self.unsent[key] += piece
        now = time.monotonic()
        if now - self.last_sent >= BROADCAST_EVERY_S:
            self._send(now)
        if now - self.last_saved >= CHECKPOINT_EVERY_S:
            self.checkpoint()

    def _send(self, now: float) -> None:
        """Every section's new text: one shared-document update for all of them (one stored row:
        with one per section, the task thread spent most of its time committing them and fell
        behind the serving core), then a delta event per section."""
        pending = {key: piece for key, piece in self.unsent.items() if piece}
        if pending:
            self.peer.append_many({self.tasks[key].section.key: piece for key, piece in pending.items()})
        for key, piece in pending.items():
            task = self.tasks[key]
            send_now(document_group(self.run.document_id), {
                "type": "section.delta", "document_id": self.run.document_id, "section_id": task.section_id,
                "run_id": self.run.id, "offset": len(self.text[key]) - len(piece), "text": piece})
        self.unsent = {key: "" for key in self.unsent}
        self.last_sent = now

    def checkpoint(self) -> None:
        now = timezone.now()
        for key, task in self.tasks.items():
            AgentTask.objects.filter(pk=task.pk, status=TaskStatus.RUNNING).update(
                checkpoint_text=self.text[key], heartbeat_at=now)
            # Into the section too, unless a person changed it since writing began.
            Section.objects.filter(pk=task.section_id, version=task.base_version).update(
                text=self.text[key], status=SectionStatus.WRITING)
        self.last_saved = time.monotonic()

    def flush(self) -> None:
        self._send(time.monotonic())

    def release(self) -> None:
        """The agent is done with its sections (finished, cancelled or failed): people may type."""
        for task in self.tasks.values():
            self.peer.set_writer(task.section.key, None)


def run_write_batch(*, run_id: int, task_ids: list[int]) -> None:
    run = WritingRun.objects.select_related("document__project").get(pk=run_id)
    if run.status != RunStatus.WRITING:
        return
    claimed = _claim(task_ids)
    if not claimed:
        return
    document = run.document
    brief, outline = brief_of(document), outline_text(document)
    # A person waits on a one-section rewrite: it goes before the bulk writing of whole runs.
    engine = llm.for_run(section_writer.ROLE, run.pk, INTERACTIVE if run.kind == "section" else BULK)
    adapter = registry.resolve_adapter(section_writer.ROLE)
    section_tasks, by_key, cited = [], {}, {}
    for task in claimed:
        section = task.section
        previous, following = _neighbours(section)
        passages = [chunk for chunk, _ in documents.source_passages(
            project=document.project, query=f"{section.heading}. {section.goal}", k=3)]
        work = section_writer.SectionTask(
            key=str(task.pk), heading=section.heading, words=section.word_budget or 150, goal=section.goal,
            key_points=section.key_point_list(), before=previous, after=following,
            passages=[chunk.text[:600] for chunk in passages], instruction=task.instruction)
        cited[work.key] = [chunk.pk for chunk in passages]
        section_tasks.append(work)
        by_key[work.key] = task
        AgentTask.objects.filter(pk=task.pk).update(
            context_bytes=section_writer.context_bytes(brief, outline, work),
            prompt=section_writer.messages(brief, outline, work), adapter_version=adapter.name if adapter else "")
    streamer = _Streamer(run, by_key)
    task_keys = {key: _task_cancel_key(task) for key, task in by_key.items()}

    queue_watch = _QueueWatch(engine, by_key)

    def cancelled(active: list[str]) -> set[str]:
        """The whole run cancelled, or single sections taken over by people (one round trip)."""
        queue_watch(active)
        keys = [request_id.split("-")[1] for request_id in active]  # "writer-<task key>-<nonce>"
        flags = redis_client().mget([_cancel_key(run)] + [task_keys[key] for key in keys])
        if flags[0]:
            return set(active)
        return {request_id for request_id, flag in zip(active, flags[1:], strict=True) if flag}

    try:
        results = section_writer.write_sections(engine, brief, outline, section_tasks, adapter=adapter,
                                                on_text=streamer, cancel=cancelled,
                                                drafts={k: t.checkpoint_text for k, t in by_key.items()})
    except Exception as error:  # noqa: BLE001  (recorded on the tasks; the run reports it)
        log.exception("writing failed")
        streamer.release()
        AgentTask.objects.filter(pk__in=[t.pk for t in claimed]).update(
            status=TaskStatus.FAILED, error=str(error)[:2000], finished_at=timezone.now())
        finish_if_done(run_id=run.id)
        return
    streamer.flush()
    model_name = getattr(engine, "base_model_name", "") or type(engine).__name__
    flags = redis_client().mget(list(task_keys.values()))
    taken_by = {key: flag.decode() for key, flag in zip(task_keys, flags, strict=True) if flag}
    for key, written in results.items():
        task = by_key[key]
        if key in taken_by:  # the person's now: their editor holds the text so far, as streamed
            Section.objects.filter(pk=task.section_id, status=SectionStatus.WRITING).update(
                text=streamer.text[key], status=SectionStatus.EDITED)
            AgentTask.objects.filter(pk=task.pk).update(
                status=TaskStatus.SKIPPED, words=written.words, tokens=streamer.tokens[key],
                finished_at=timezone.now(), error=f"Taken over by {taken_by[key]}.")
            continue
        # If a person edited the section meanwhile, theirs stays and ours is kept as a conflict revision.
        try:
            documents.section_save_text(section_id=task.section_id, user=None, text=written.text,
                                        expected_version=task.base_version, agent_role=section_writer.ROLE,
                                        model_version=_model_version(model_name, task.adapter_version),
                                        peer=streamer.peer)  # holds the text it streamed: no reload
        except documents.SectionConflict as conflict:
            # A person saved a form meanwhile: a fresh copy of the shared text includes their change.
            crdt.Peer(run.document_id, section_writer.ROLE).replace(task.section.key, conflict.section.text)
        else:
            # [1], [2], ... in this text are these chunks, in this order.
            Section.objects.filter(pk=task.section_id).update(citations=cited[key])
        status = TaskStatus.CANCELLED if written.finish == "cancelled" else TaskStatus.DONE
        AgentTask.objects.filter(pk=task.pk).update(status=status, checkpoint_text=written.text,
                                                    words=written.words, tokens=streamer.tokens[key],
                                                    finished_at=timezone.now())
    streamer.release()
    finish_if_done(run_id=run.id)


class _QueueWatch:
    """Once a second, from the task's thread: tells the watcher the writers are alive even while
    their requests wait for a row of the serving core (no text, so no checkpoint: without this,
    a wait past WRITER_STALE_S had the section given to a second writer), and keeps each waiting
    writer's place in the core's queue on its task, so the page can say "3 requests ahead"."""

    def __init__(self, engine, tasks: dict[str, AgentTask]):
        self.core = getattr(engine, "core", None)
        self.tasks, self.last, self.shown = tasks, time.monotonic(), {}

    def __call__(self, active: list[str]) -> None:
        if time.monotonic() - self.last < CHECKPOINT_EVERY_S:
            return
        self.last = time.monotonic()
        AgentTask.objects.filter(pk__in=[task.pk for task in self.tasks.values()], status=TaskStatus.RUNNING).update(
            heartbeat_at=timezone.now())
        if self.core is None:
            return
        for request_id in active:
            key = request_id.split("-")[1]
            ahead = self.core.position(request_id)
            if self.shown.get(key, None) != ahead:
                self.shown[key] = ahead
                AgentTask.objects.filter(pk=self.tasks[key].pk).update(waiting_ahead=ahead)


def _model_version(model_name: str, adapter_version: str) -> str:
    return f"{model_name} + {adapter_version}" if adapter_version else model_name


def _neighbours(section: Section) -> tuple[str, str]:
    siblings = list(Section.objects.filter(document_id=section.document_id, parent_id=section.parent_id)
                    .order_by("order", "id"))
    index = next(i for i, s in enumerate(siblings) if s.pk == section.pk)

    def describe(other: Section | None) -> str:
        return f"{other.heading}: {other.goal}" if other else ""

    return (describe(siblings[index - 1] if index > 0 else None),
            describe(siblings[index + 1] if index + 1 < len(siblings) else None))


def finish_if_done(*, run_id: int) -> None:
    """When the last writer is done: fail or cancel the run, or hand the article to the reviewer
    and the finisher (one task on the agents queue; people read the article meanwhile)."""
    from webapp.runs.tasks import review_run

    with transaction.atomic():
        run = WritingRun.objects.select_for_update().get(pk=run_id)
        if run.status != RunStatus.WRITING:
            return
        if run.tasks.filter(status__in=[TaskStatus.QUEUED, TaskStatus.RUNNING]).exists():
            return
        failed = list(run.tasks.filter(status=TaskStatus.FAILED).values_list("error", flat=True))
        if failed:
            _set_status(run, RunStatus.FAILED, "; ".join(failed)[:2000])
            _release_sections(run)
        elif run.tasks.filter(status=TaskStatus.CANCELLED).exists():
            _set_status(run, RunStatus.CANCELLED)
        elif run.kind == "section":  # one section rewritten: only the checks that need no model
            review_document(document=run.document, run=run)
            _set_status(run, RunStatus.DONE)
        else:
            AgentTask.objects.bulk_create([AgentTask(run=run, role=role) for role in (reviewer.ROLE, finisher.ROLE)])
            _set_status(run, RunStatus.REVIEWING)
            transaction.on_commit(lambda: review_run.delay(run.id))


class _Heartbeat:
    """A cancel check for the engine that also tells the watcher these tasks are alive."""

    def __init__(self, run: WritingRun, task_ids: list[int]):
        self.run, self.task_ids, self.last = run, task_ids, time.monotonic()

    def __call__(self, active: list[str]) -> set[str]:
        if time.monotonic() - self.last >= CHECKPOINT_EVERY_S:
            AgentTask.objects.filter(pk__in=self.task_ids, status=TaskStatus.RUNNING).update(
                heartbeat_at=timezone.now())
            self.last = time.monotonic()
        return set(active) if redis_client().exists(_cancel_key(self.run)) else set()


def run_review(*, run_id: int) -> None:
    """The reviewer's suggestions and the finisher's title and lead, then the run is done. A
    reviewer that fails leaves the article as written; the run says so."""
    run = WritingRun.objects.select_related("document").get(pk=run_id)
    if run.status != RunStatus.REVIEWING:
        return
    claimed = _claim(list(run.tasks.filter(role__in=[reviewer.ROLE, finisher.ROLE]).values_list("id", flat=True)))
    if not claimed:
        return
    heartbeat = _Heartbeat(run, [task.pk for task in claimed])
    error = ""
    for task in claimed:
        tokens = []
        try:
            act = review_document if task.role == reviewer.ROLE else finish_document
            act(document=run.document, run=run, cancel=heartbeat,
                engine=llm.for_run(task.role, run.pk, BULK if task.role == reviewer.ROLE else INTERACTIVE),
                on_text=tokens.append)
        except Exception as failure:  # noqa: BLE001  (recorded on the task and the run)
            log.exception("%s failed", task.role)
            error = f"The {task.role} failed: {failure}"[:2000]
            AgentTask.objects.filter(pk=task.pk).update(status=TaskStatus.FAILED, error=error,
                                                        tokens=len(tokens), finished_at=timezone.now())
        else:
            AgentTask.objects.filter(pk=task.pk).update(status=TaskStatus.DONE, tokens=len(tokens),
                                                        finished_at=timezone.now())
    with transaction.atomic():
        run = WritingRun.objects.select_for_update().get(pk=run_id)
        if run.status == RunStatus.REVIEWING and not run.tasks.filter(status=TaskStatus.RUNNING).exists():
            _set_status(run, RunStatus.DONE, error)


def requeue_stale() -> int:
    """Give sections whose writer stopped checkpointing (a killed worker) to a live worker; they
    resume from their checkpoint. Run by the watch_runs task, which workers start when they start
    and which repeats while any run is writing or reviewing."""
    from webapp.runs.tasks import review_run, write_batch

    stale = timezone.now() - timedelta(seconds=settings.WRITER_STALE_S)
    reviews = set(AgentTask.objects.filter(status=TaskStatus.RUNNING, heartbeat_at__lt=stale,
                                           run__status=RunStatus.REVIEWING).values_list("run_id", flat=True))
    for run_id in reviews:
        log.info("re-queueing the review of run %d (pid %d)", run_id, os.getpid())
        review_run.delay(run_id)
    tasks = AgentTask.objects.filter(status=TaskStatus.RUNNING, heartbeat_at__lt=stale,
                                     run__status=RunStatus.WRITING)
    by_run: dict[int, list[int]] = {}
    for task_id, run_id in tasks.values_list("id", "run_id"):
        by_run.setdefault(run_id, []).append(task_id)
    for run_id, task_ids in by_run.items():
        log.info("re-queueing %d stale section(s) of run %d (pid %d)", len(task_ids), run_id, os.getpid())
        write_batch.delay(run_id, task_ids)
    return sum(len(ids) for ids in by_run.values()) + len(reviews)


# --- review and suggestions ----------------------------------------------------------------

def _leaves(document: Document) -> list[Section]:
    tree = [section for section, _, _ in document.section_tree()]
    parents = {section.parent_id for section in tree}
    return [section for section in tree if section.id not in parents]


def review_document(*, document: Document, run: WritingRun | None = None, engine=None, cancel=None,
                    on_text=None) -> list[Suggestion]:
    """The reviewer's proposals, stored as open suggestions (replacing older open ones). Pinned
    sections are left alone. With no engine, only the checks that need no model run."""
    leaves = [s for s in _leaves(document) if s.text.strip()]
    sections = [(str(s.pk), s.heading, s.text) for s in leaves]
    pinned = {str(s.pk) for s in leaves if s.pinned}
    proposals = reviewer.review(engine, document.topic or document.title, sections,
                                adapter=registry.resolve_adapter(reviewer.ROLE) if engine else None,
                                cancel=cancel, skip=pinned, on_text=on_text)
    with transaction.atomic():
        document.suggestions.filter(status=SuggestionStatus.OPEN, role=reviewer.ROLE).delete()
        created = Suggestion.objects.bulk_create(
            Suggestion(document=document, section_id=int(p.section_key), run=run, role=reviewer.ROLE, kind=p.kind,
                       original=p.original, replacement=p.replacement, reason=p.reason)
            for p in proposals if p.section_key not in pinned)
        broadcast_on_commit(document_group(document.id), {
            "type": "suggestions.changed", "document_id": document.id, "open": len(created)})
    return created


def finish_document(*, document: Document, run: WritingRun | None = None, engine=None, cancel=None,
                    on_text=None) -> finisher.Finish:
    """The finisher's lead goes into the document unless a person wrote the lead; its title is a
    suggestion (people named the document)."""
    leaves = [(s.heading, s.text) for s in _leaves(document) if s.text.strip()]
    result = finisher.finish(engine or llm.get_engine(finisher.ROLE), brief_of(document), leaves,
                             adapter=registry.resolve_adapter(finisher.ROLE), cancel=cancel, on_text=on_text)
    with transaction.atomic():
        document = Document.objects.select_for_update().get(pk=document.pk)
        if document.lead_by_agent or not document.lead.strip():
            document.lead, document.lead_by_agent = result.lead, True
            document.save(update_fields=["lead", "lead_by_agent", "updated_at"])
        document.suggestions.filter(status=SuggestionStatus.OPEN, role=finisher.ROLE).delete()
        if result.title_path == "model" and result.title.strip().lower() != document.title.strip().lower():
            Suggestion.objects.create(document=document, section=None, run=run, role=finisher.ROLE, kind="title",
                                      original=document.title, replacement=result.title,
                                      reason="The finisher's title for the finished article.")
        broadcast_on_commit(document_group(document.id), {
            "type": "document.finished", "document_id": document.id, "lead": document.lead})
    return result


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
        broadcast_on_commit(document_group(suggestion.document_id), {
            "type": "suggestion.decided", "document_id": suggestion.document_id, "suggestion_id": suggestion.id,
            "status": status})
    return suggestion
