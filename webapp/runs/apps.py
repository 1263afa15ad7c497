from __future__ import annotations

from django.apps import AppConfig


class RunsConfig(AppConfig):
    name = "webapp.runs"
    label = "runs"

    def ready(self) -> None:
        from celery.signals import worker_ready
        from django.conf import settings

        def start_watching(sender=None, **kwargs) -> None:
            # An agents worker that starts looks for sections whose worker died mid-write.
            if settings.AGENTS_QUEUE in {q.name for q in sender.app.amqp.queues.consume_from.values()}:
                from webapp.runs.tasks import watch_runs

                watch_runs.delay()

        worker_ready.connect(start_watching, weak=False)
