"""The Celery app. Workers run `celery -A webapp worker -Q <queue>`; queues are agents (LLM
engine, one process per GPU), default (sources, exports, light work) and training."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable

from celery import Celery
from celery.signals import celeryd_after_setup
from django.db import transaction

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "webapp.settings")

log = logging.getLogger(__name__)

app = Celery("scriptorium")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()


@celeryd_after_setup.connect
def _remember_worker_name(sender: str, **kwargs) -> None:
    # The engine's metrics are published under this name (webapp/llm.py), which /healthz matches.
    os.environ["SCRIPTORIUM_WORKER_NAME"] = sender


def enqueue(name: str, *args, countdown: float | None = None,
            on_error: Callable[[Exception], None] | None = None) -> None:
    """Queue the task registered as `name` once the current transaction commits (at once outside
    one), routed by CELERY_TASK_ROUTES. Services queue their next step by name, so they never
    import the tasks that call them. If the broker cannot be reached, the saved change stays and
    `on_error` is told (to mark the work failed, with a way to retry); without one the failure is
    logged, and the runs' watcher queues work that has waited too long again."""
    def send() -> None:
        try:
            app.send_task(name, args=list(args), countdown=countdown)
        except Exception as error:  # noqa: BLE001  (kombu raises several kinds when the broker is away)
            log.warning("could not queue %s%s: %s", name, tuple(args), error)
            if on_error is not None:
                on_error(error)

    transaction.on_commit(send)
