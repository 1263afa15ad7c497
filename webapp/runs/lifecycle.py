"""A run's life below its stages: the names of its Celery tasks and cancel flags, its status
(stored and broadcast), claiming tasks nobody works on, and unlocking its sections.

Stages queue each other by task name (webapp.celery.enqueue), so no module here imports the
Celery tasks that call it."""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Iterator
from datetime import timedelta

from django.conf import settings
from django.db import close_old_connections, connection
from django.db.models import F, Q
from django.utils import timezone

from agents import steps
from agents.roles import section_text
from webapp import events
from webapp.documents import crdt
from webapp.redis import CancelFlags
from webapp.runs.models import FINAL, AgentTask, RunStatus, TaskStatus, WritingRun

PLAN_TASK = "agents.plan_run"
WRITE_TASK = "agents.write_batch"
REVIEW_TASK = "agents.review_run"
# Each step of the article (agents/steps.py) is a stage of a run: its Celery task, and the run's
# status while it runs. A stage that is done starts the step after it (`steps.after`).
STAGE_TASK = {steps.PLAN: PLAN_TASK, steps.WRITE: WRITE_TASK, steps.REVIEW: REVIEW_TASK}
STAGE_STATUS = {steps.PLAN: RunStatus.PLANNING, steps.WRITE: RunStatus.WRITING, steps.REVIEW: RunStatus.REVIEWING}
GENERATE_TASK = "agents.generate"
ASK_TASK = "agents.ask_about_passage"
REPLY_TASK = "agents.reply_in_thread"

log = logging.getLogger(__name__)

CHECKPOINT_EVERY_S = 1.0  # database checkpoint of streamed text, and the writers' heartbeat

flags = CancelFlags()


def run_flag(run: WritingRun) -> str:
    # With the creation time, so that a run with a reused id (a new database) never sees the
    # flag of an old run.
    return f"run-{run.pk}-{run.created_at.timestamp()}"


def task_flag(task: AgentTask) -> str:
    """Set (to a person's name) when that person takes the task's section over."""
    return f"task-{task.pk}-{task.run.created_at.timestamp()}"


def model_version(engine, adapter_name: str) -> str:
    """What revisions name as an agent's model: the base model, and the adapter if one was used."""
    name = getattr(engine, "base_model_name", "") or type(engine).__name__
    return f"{name} + {adapter_name}" if adapter_name else name


def set_status(run: WritingRun, status: str, error: str = "") -> None:
    run.status, run.error = status, error
    fields = ["status", "error"]
    if status in FINAL:
        run.finished_at = timezone.now()
        fields.append("finished_at")
    run.save(update_fields=fields)
    announce(run)


def announce(run: WritingRun) -> None:
    events.send(events.RunStatusChanged(document_id=run.document_id, run_id=run.id, status=run.status,
                                        error=run.error))


def progress(run_id: int, document_id: int) -> None:
    """The run's numbers moved: pages re-read its Agents panel."""
    events.send(events.RunProgress(document_id=document_id, run_id=run_id))


def claim(task_ids: list[int]) -> list[AgentTask]:
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
    if claimed:
        progress(claimed[0].run_id, claimed[0].run.document_id)
    return claimed


def heartbeat(tasks: list[AgentTask]) -> set[int]:
    """These tasks are alive (the watcher gives a task whose heartbeat stops to another worker).
    Each is held by the attempt that claimed it: the ids returned are of those another worker
    has claimed since (a later attempt), which this worker must stop writing."""
    if not tasks:
        return set()
    mine = Q()
    for task in tasks:
        mine |= Q(pk=task.pk, attempts=task.attempts)
    if AgentTask.objects.filter(mine, status=TaskStatus.RUNNING).update(heartbeat_at=timezone.now()) == len(tasks):
        return set()  # one query a beat while all is well
    attempts = dict(AgentTask.objects.filter(pk__in=[task.pk for task in tasks]).values_list("pk", "attempts"))
    return {task.pk for task in tasks if attempts.get(task.pk, task.attempts) != task.attempts}  # not merely done


def held(task: AgentTask):
    """The task's row while this attempt holds it: updates through it do nothing once another
    worker has claimed the task."""
    return AgentTask.objects.filter(pk=task.pk, attempts=task.attempts)


@contextlib.contextmanager
def kept_alive(tasks: list[AgentTask]) -> Iterator[None]:
    """Heartbeats for these tasks from a thread of their own while their worker works on them:
    getting ready (loading, or downloading and verifying, a model or an adapter) may take longer
    than WRITER_STALE_S, and a task thread starved of the CPU may not checkpoint for as long;
    either way the watcher would give the tasks to a second worker. A killed worker stops this
    thread too, which is what the watcher is there for."""
    if connection.in_atomic_block:  # another connection would wait on rows this transaction holds
        yield
        return
    done = threading.Event()
    every = min(CHECKPOINT_EVERY_S, settings.WRITER_STALE_S / 4)

    def beat() -> None:
        try:
            while not done.wait(every):
                try:
                    heartbeat(tasks)
                except Exception:  # noqa: BLE001  (the database is away a moment: the next beat tries again)
                    log.warning("could not record a heartbeat", exc_info=True)
                    close_old_connections()
        finally:
            connection.close()  # this thread's own connection

    thread = threading.Thread(target=beat, name="heartbeat", daemon=True)
    thread.start()
    try:
        yield
    finally:
        done.set()
        thread.join()


def release_sections(run: WritingRun) -> None:
    """Unlock the run's sections in people's editors (a dead worker cannot do it itself)."""
    keys = list(run.tasks.filter(role=section_text.ROLE, section__isnull=False)
                .values_list("section__key", flat=True))
    if keys:
        peer = crdt.Peer(run.document_id, section_text.ROLE)
        for key in keys:
            peer.set_writer(key, None)
