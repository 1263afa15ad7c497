"""The runs' watcher: a thread in every worker that consumes the agents queue, looking every
RUNS_WATCH_EVERY_S (WRITER_STALE_S / 2) seconds for work nobody is doing (services.requeue_stale: sections and plans
whose worker died, messages the broker lost, stages finished but never moved on).

A thread rather than a chain of countdown tasks: the chain lived in the broker, and a Redis
restart that lost its pending messages ended it, so a review whose message was lost in the same
outage was never queued again (the run stayed "reviewing"). The thread looks whatever the broker
and the database do; several workers' watchers may look at once, and every step they take is
idempotent (a task is claimed once; a run is moved on under its row lock)."""

from __future__ import annotations

import logging
import threading

from django.conf import settings
from django.db import close_old_connections, connection

from webapp.runs import services

log = logging.getLogger(__name__)


def look() -> int:
    """One look; what was re-queued or moved on. The database or the broker being away is
    logged, and the next look tries again."""
    close_old_connections()  # a connection the database dropped is not reused
    try:
        return services.requeue_stale()
    except Exception:  # noqa: BLE001  (logged; the next look tries again)
        log.exception("the runs' watcher could not look; it looks again in a moment")
        return 0


def start() -> threading.Event:
    """Start this process's watcher; set the returned event to stop it."""
    stop = threading.Event()
    every = settings.RUNS_WATCH_EVERY_S

    def watch() -> None:
        try:
            while not stop.wait(every):
                look()
        finally:
            connection.close()

    threading.Thread(target=watch, name="runs-watcher", daemon=True).start()
    return stop
