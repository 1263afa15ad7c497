"""Writing runs, as people drive them: start (the chief editor plans unless people wrote the
outline), approve the outline (the leaves go to the agents queue in batches), regenerate one
section, take a section over from its writer, cancel; and the watcher's re-queueing of work
whose worker died. The stages themselves are in writing.py and reviewing.py.

A run is finished by whichever batch completes last (not by a Celery chord): a chord member on a
killed worker stays unacknowledged in Redis until the visibility timeout (hours), which would hold
the whole run; here a batch given to another worker finishes the run as soon as it is done."""

from __future__ import annotations

import contextlib
import logging
import os
from datetime import datetime, timedelta

from django.conf import settings
from django.db import InterfaceError, OperationalError, transaction
from django.db.models import Exists, F, OuterRef, Q
from django.utils import timezone

from agents import coordinator, steps
from agents.llm.types import INTERACTIVE
from agents.roles import chief_editor, section_text
from webapp import llm
from webapp.celery import enqueue
from webapp.documents import crdt
from webapp.documents import services as documents
from webapp.documents.models import Document, Section, SectionStatus
from webapp.registry import services as registry
from webapp.runs import lifecycle, reviewing
from webapp.runs.models import ACTIVE, FINAL, AgentTask, RunStatus, TaskStatus, WritingRun

log = logging.getLogger(__name__)


# --- starting and planning -----------------------------------------------------------------

class RunRefused(Exception):
    pass


@transaction.atomic
def run_start(*, document: Document, user, batch_size: int = 8) -> WritingRun:
    """A new run on the document, unless one is under way: two people pressing "Write with
    agents" at the same moment make one run (the document's row is written first, so the second
    waits for the first to commit, on PostgreSQL and SQLite alike, and then sees its run)."""
    Document.objects.filter(pk=document.pk).update(updated_at=timezone.now())
    if document.runs.filter(status__in=ACTIVE).exists():
        raise RunRefused("A run is already under way for this document; cancel it first.")
    run = WritingRun.objects.create(document=document, created_by=user, batch_size=batch_size)
    # The chief editor's task, claimed and kept alive like a writer's: a plan whose worker died
    # (or whose database went away) is planned again by another worker (requeue_stale).
    AgentTask.objects.bulk_create(AgentTask(run=run, role=role, heartbeat_at=timezone.now())
                                  for role in steps.PLAN.roles)
    lifecycle.announce(run)
    enqueue(lifecycle.STAGE_TASK[steps.PLAN], run.id, on_error=lambda error: _not_queued(run.pk))
    return run


def _not_queued(run_id: int) -> None:
    with transaction.atomic():
        run = WritingRun.objects.select_for_update().get(pk=run_id)
        lifecycle.set_status(run, RunStatus.FAILED, "The run could not be queued: the task queue (Redis) is "
                                                    "unreachable. Start it again when the service is back.")


def run_plan(*, run_id: int) -> WritingRun:
    """The chief editor's outline, unless people already wrote one; then approval or writing. A
    plan that fails says why on the run; one cut short by a dead worker or database is planned
    again (the task's heartbeat stops: requeue_stale)."""
    run = WritingRun.objects.select_related("document").get(pk=run_id)
    if run.status != RunStatus.PLANNING:
        return run  # a redelivered task: planning happened already
    ours = run.tasks.filter(role__in=steps.PLAN.roles)
    claimed = lifecycle.claim(list(ours.values_list("id", flat=True)))
    if not claimed and ours.exists():
        return run  # another worker is planning it
    with lifecycle.kept_alive(claimed):
        try:
            _plan(run)
        except (OperationalError, InterfaceError):
            raise  # the database is away: the task stays running, its heartbeat stops, it is planned again
        except Exception as error:  # noqa: BLE001  (the model could not be loaded or failed: the run says so)
            log.exception("planning run %d failed", run.pk)
            with transaction.atomic():
                for task in claimed:
                    lifecycle.held(task).update(status=TaskStatus.FAILED, error=str(error)[:2000],
                                                finished_at=timezone.now())
                lifecycle.set_status(run, RunStatus.FAILED, f"The chief editor could not plan: {error}"[:2000])
            return run
    with transaction.atomic():  # the plan is done and the run moves on, or neither
        if any(not lifecycle.held(task).filter(status=TaskStatus.RUNNING).update(
                status=TaskStatus.DONE, finished_at=timezone.now()) for task in claimed):
            return run  # another worker took the planning over (this one looked dead): it moves the run on
        if run.document.auto_approve_outline or not steps.WRITE.approved:  # the step after the plan
            return run_approve(run=run)
        lifecycle.set_status(run, RunStatus.AWAITING_APPROVAL)  # people approve the plan, then writing starts
    return run


def _plan(run: WritingRun) -> None:
    document = run.document
    if document.sections.exists():
        run.outline_path = "existing"
    else:
        engine = llm.for_run(chief_editor.ROLE, run.pk, INTERACTIVE)
        adapter = registry.resolve_adapter(chief_editor.ROLE)
        plan = coordinator.plan(engine, document.brief(), adapter,
                                max_words=settings.SECTION_MAX_WORDS or coordinator.SECTION_MAX_WORDS)
        documents.outline_plan(document=document, planned=plan.sections, agent_role=chief_editor.ROLE,
                               model_version=lifecycle.model_version(engine, adapter.name if adapter else ""))
        run.outline_path, run.outline_problems = plan.path, plan.problems
    run.save(update_fields=["outline_path", "outline_problems"])


# --- writing -------------------------------------------------------------------------------

def _writable(section: Section) -> bool:
    """Agents never overwrite pinned text or text a person wrote."""
    return not section.pinned and not (section.status == SectionStatus.EDITED and section.text.strip())


@transaction.atomic
def run_approve(*, run: WritingRun) -> WritingRun:
    run = WritingRun.objects.select_for_update().get(pk=run.pk)
    if run.status not in (RunStatus.PLANNING, RunStatus.AWAITING_APPROVAL):
        return run
    tree = [section for section, _, _ in run.document.section_tree()]
    parents = {section.parent_id for section in tree}
    AgentTask.objects.bulk_create([
        AgentTask(run=run, role=section_text.ROLE, section=section, base_version=section.version,
                  status=TaskStatus.QUEUED if _writable(section) else TaskStatus.SKIPPED,
                  heartbeat_at=timezone.now())  # while queued: when it was queued (see requeue_stale)
        for section in tree if section.id not in parents])
    lifecycle.set_status(run, lifecycle.STAGE_STATUS[steps.WRITE])
    queued = list(run.tasks.filter(status=TaskStatus.QUEUED).values_list("id", flat=True))  # in reading order
    for batch in steps.batches(queued, run.batch_size):
        enqueue(lifecycle.STAGE_TASK[steps.WRITE], run.id, batch)
    if not queued:
        transaction.on_commit(lambda: reviewing.finish_if_done(run_id=run.id))
    return run


class RegenerateRefused(Exception):
    pass


@transaction.atomic
def section_regenerate(*, section: Section, user, instruction: str = "") -> WritingRun:
    """Write one section again, following a person's instruction. Its current text stays in the
    history. Pinned sections are refused: unpin first."""
    if section.pinned:
        raise RegenerateRefused(f"“{section.heading}” is pinned; unpin it to let an agent rewrite it.")
    if section.children.exists():
        raise RegenerateRefused(f"“{section.heading}” has subsections; regenerate those instead.")
    if AgentTask.objects.unfinished().filter(section=section).exists():
        raise RegenerateRefused(f"“{section.heading}” is being written already.")
    run = WritingRun.objects.create(document=section.document, created_by=user, status=RunStatus.WRITING,
                                    kind="section", outline_path="existing", batch_size=1)
    task = AgentTask.objects.create(run=run, role=section_text.ROLE, section=section, heartbeat_at=timezone.now(),
                                    base_version=section.version, instruction=instruction[:2000])
    lifecycle.announce(run)
    enqueue(lifecycle.WRITE_TASK, run.id, [task.id])
    return run


class TakeOverRefused(Exception):
    pass


def section_take_over(*, section: Section, user) -> AgentTask:
    """A person takes over a section an agent is writing: the writer stops at its next step, the
    text so far stays, the section unlocks at once, and the rest of the run goes on."""
    with transaction.atomic():  # the row locked while the flag is set: the writer's streamer checks under it
        task = AgentTask.objects.select_for_update(of=("self",)).unfinished().filter(
            section=section, role=section_text.ROLE).select_related("run").first()
        if task is None:
            raise TakeOverRefused(f"No agent is writing “{section.heading}”.")
        lifecycle.flags.set(lifecycle.task_flag(task), by=user.username)
        AgentTask.objects.filter(pk=task.pk, status=TaskStatus.QUEUED).update(
            status=TaskStatus.SKIPPED, error=f"Taken over by {user.username}.")
    crdt.Peer(section.document_id, user.username).set_writer(section.key, None)
    return task


def section_rewrite(*, section: Section, user) -> WritingRun:
    """A fresh writer for a section whose writer stalled: the old one is stopped for good (its
    attempt is ended, so its worker drops the section and never unlocks it under the new writer),
    its text so far is saved as its revision, and a one-section run writes the section again."""
    if section.pinned:
        raise RegenerateRefused(f"“{section.heading}” is pinned; take it over instead, or unpin it first.")
    with transaction.atomic():
        task = AgentTask.objects.select_for_update().unfinished().filter(section=section,
                                                                          role=section_text.ROLE).first()
        if task is None:
            raise TakeOverRefused(f"No agent is writing “{section.heading}”; use Regenerate to write it again.")
        lifecycle.flags.set(lifecycle.task_flag(task), by=user.username)
        AgentTask.objects.filter(pk=task.pk).update(
            status=TaskStatus.SKIPPED, attempts=F("attempts") + 1, finished_at=timezone.now(),
            error=f"Stopped by {user.username} for a rewrite.")
    section.refresh_from_db()
    if section.text.strip():
        # (A conflict: someone saved it a moment ago; that text is in the history already.)
        with contextlib.suppress(documents.SectionConflict):
            documents.section_save_text(section_id=section.pk, user=None, text=section.text,
                                        expected_version=section.version, agent_role=section_text.ROLE,
                                        summary=f"Its stalled writer's text so far; {user.username} asked for a "
                                                "rewrite.")
    section.refresh_from_db()
    return section_regenerate(section=section, user=user)


def run_cancel(*, run: WritingRun) -> WritingRun:
    """Stop a run: writers stop at their next decode step and keep what they wrote."""
    lifecycle.flags.set(lifecycle.run_flag(run))
    with transaction.atomic():
        run = WritingRun.objects.select_for_update().get(pk=run.pk)
        if run.status in FINAL:
            return run
        run.tasks.filter(status=TaskStatus.QUEUED).update(status=TaskStatus.CANCELLED)
        lifecycle.set_status(run, RunStatus.CANCELLED)
        lifecycle.release_sections(run)
    return run


def requeue_stale() -> int:
    """Recover work a dead worker or a lost message left behind; run by the watcher thread of every
    agents worker (watcher.py). Four policies, each its own function: a finished stage never moved
    on is moved on; a plan whose chief editor stopped (or whose message was lost) is planned again;
    a review whose worker stopped is reviewed again; sections whose writer stopped checkpointing,
    or whose message was lost, go to a live worker and resume from their checkpoint. The number
    of runs and sections recovered."""
    now = timezone.now()
    stale = now - timedelta(seconds=settings.WRITER_STALE_S)  # running, but no heartbeat since
    lost = now - timedelta(seconds=settings.QUEUED_LOST_S)  # queued, and never started since
    return (_move_on_finished_stages() + _plan_again(stale, lost) + _review_again(stale, lost)
            + _write_again(stale, lost))


def _plan_again(stale: datetime, lost: datetime) -> int:
    """Runs planning whose chief editor stopped heartbeating, or whose plan was queued long ago
    and never started."""
    plans = AgentTask.objects.filter(Q(status=TaskStatus.RUNNING, heartbeat_at__lt=stale) | Q(
        status=TaskStatus.QUEUED, heartbeat_at__lt=lost), role=chief_editor.ROLE, run__status=RunStatus.PLANNING)
    runs = set(plans.values_list("run_id", flat=True))
    plans.filter(status=TaskStatus.QUEUED).update(heartbeat_at=timezone.now())  # once per QUEUED_LOST_S
    for run_id in runs:
        log.info("re-queueing the plan of run %d (pid %d)", run_id, os.getpid())
        enqueue(lifecycle.PLAN_TASK, run_id)
    return len(runs)


def _review_again(stale: datetime, lost: datetime) -> int:
    """Runs reviewing whose reviewer or finisher stopped heartbeating, or whose review task was
    queued long ago and never started (its message was lost)."""
    reviewing_runs = AgentTask.objects.filter(run__status=RunStatus.REVIEWING)
    lost_tasks = reviewing_runs.filter(status=TaskStatus.QUEUED, heartbeat_at__lt=lost)
    stopped = reviewing_runs.filter(status=TaskStatus.RUNNING, heartbeat_at__lt=stale)
    runs = set(stopped.values_list("run_id", flat=True)) | set(lost_tasks.values_list("run_id", flat=True))
    lost_tasks.update(heartbeat_at=timezone.now())  # once per QUEUED_LOST_S
    for run_id in runs:
        log.info("re-queueing the review of run %d (pid %d)", run_id, os.getpid())
        enqueue(lifecycle.REVIEW_TASK, run_id)
    return len(runs)


def _write_again(stale: datetime, lost: datetime) -> int:
    """Sections of writing runs whose writer stopped checkpointing (a killed worker), or that were
    queued long ago and never started (the broker was away when the message was sent, or restarted
    without it): queued again, by run; a copy of a lost message that does arrive finds them claimed."""
    writing_runs = AgentTask.objects.filter(run__status=RunStatus.WRITING)
    lost_tasks = writing_runs.filter(status=TaskStatus.QUEUED, heartbeat_at__lt=lost)
    found = list(writing_runs.filter(status=TaskStatus.RUNNING, heartbeat_at__lt=stale).values_list("id", "run_id"))
    found += list(lost_tasks.values_list("id", "run_id"))
    lost_tasks.update(heartbeat_at=timezone.now())
    by_run: dict[int, list[int]] = {}
    for task_id, run_id in found:
        by_run.setdefault(run_id, []).append(task_id)
    for run_id, task_ids in by_run.items():
        log.info("re-queueing %d stale or lost section(s) of run %d (pid %d)", len(task_ids), run_id, os.getpid())
        enqueue(lifecycle.WRITE_TASK, run_id, task_ids)
    return len(found)


def _move_on_finished_stages() -> int:
    """Runs writing or reviewing that have tasks, none of them queued or running."""
    active = AgentTask.objects.unfinished().filter(run=OuterRef("pk"))
    finished = list(WritingRun.objects.filter(status__in=[RunStatus.WRITING, RunStatus.REVIEWING], tasks__isnull=False)
                    .exclude(Exists(active)).distinct().values_list("id", "status"))
    for run_id, status in finished:
        log.info("moving on run %d, whose %s is finished (pid %d)", run_id, status, os.getpid())
        if status == RunStatus.WRITING:
            reviewing.finish_if_done(run_id=run_id)
        else:
            reviewing.finish_review(run_id=run_id)
    return len(finished)
