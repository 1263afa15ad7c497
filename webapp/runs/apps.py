from __future__ import annotations

from celery.signals import worker_ready
from django.apps import AppConfig
from django.conf import settings


def _start_watching(sender=None, **kwargs) -> None:
    """An agents worker watches for work nobody is doing (webapp/runs/watcher.py)."""
    if settings.AGENTS_QUEUE in {q.name for q in sender.app.amqp.queues.consume_from.values()}:
        from webapp.runs import watcher

        watcher.start()


class RunsConfig(AppConfig):
    name = "webapp.runs"
    label = "runs"

    def ready(self) -> None:
        worker_ready.connect(_start_watching, weak=False)
