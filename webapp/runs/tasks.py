"""Celery tasks of writing runs, all on the agents queue. They take ids and call one service."""

from __future__ import annotations

from celery import shared_task
from django.conf import settings

from webapp.runs import services
from webapp.runs.models import RunStatus, WritingRun


@shared_task(name="agents.plan_run")
def plan_run(run_id: int) -> str:
    return services.run_plan(run_id=run_id).status


@shared_task(name="agents.write_batch")
def write_batch(run_id: int, task_ids: list[int]) -> None:
    services.run_write_batch(run_id=run_id, task_ids=task_ids)


@shared_task(name="agents.review_run")
def review_run(run_id: int) -> None:
    services.run_review(run_id=run_id)


@shared_task(name="agents.watch_runs", ignore_result=True)
def watch_runs() -> int:
    """Re-queue sections of dead workers; look again later while anything is being written."""
    requeued = services.requeue_stale()
    if WritingRun.objects.filter(status__in=[RunStatus.WRITING, RunStatus.REVIEWING]).exists():
        watch_runs.apply_async(countdown=max(1, settings.WRITER_STALE_S // 2))
    return requeued
