"""The Celery app. Workers run `celery -A webapp worker -Q <queue>`; queues are agents (LLM
engine, one process per GPU), default (sources, exports, light work) and training."""

from __future__ import annotations

import os

from celery import Celery
from celery.signals import celeryd_after_setup
from django.db import transaction

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "webapp.settings")

app = Celery("scriptorium")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()


@celeryd_after_setup.connect
def _remember_worker_name(sender: str, **kwargs) -> None:
    # The engine's metrics are published under this name (webapp/llm.py), which /healthz matches.
    os.environ["SCRIPTORIUM_WORKER_NAME"] = sender


def enqueue(name: str, *args, countdown: float | None = None) -> None:
    """Queue the task registered as `name` once the current transaction commits (at once outside
    one), routed by CELERY_TASK_ROUTES. Services queue their next step by name, so they never
    import the tasks that call them."""
    transaction.on_commit(lambda: app.send_task(name, args=list(args), countdown=countdown))
