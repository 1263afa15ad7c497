"""The training queue's one task."""

from __future__ import annotations

from celery import shared_task

from webapp.jobs import training


@shared_task(name=training.RUN_TASK, acks_late=False)
def run_job(job_id: int) -> None:
    """One training job, start to end (acknowledged at once: a job whose worker dies is marked
    failed with its checkpoint, not silently run again from the start)."""
    training.run(job_id)


@shared_task(name=training.JOIN_TASK, acks_late=False)
def join_job(job_id: int, rank: int, address: str, port: int) -> None:
    """One more machine's share of a job on several (torchrun node `rank`)."""
    training.join(job_id, rank, address, port)
