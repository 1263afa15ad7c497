"""/healthz: is the database up, is Redis up, and does a worker answer on every queue? Anyone
(a load balancer) gets the status alone; staff also get the details (vendors, errors, workers)."""

from __future__ import annotations

import time

import redis
from django.conf import settings
from django.db import connection
from django.http import JsonResponse
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET

from webapp import llm
from webapp import redis as shared
from webapp.celery import app


def _check_database() -> dict:
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
            cursor.fetchone()
    except Exception as error:  # noqa: BLE001  (any failure means "down", reported as such)
        return {"ok": False, "error": str(error)[:300]}
    return {"ok": True, "vendor": connection.vendor}


def _check_redis() -> dict:
    try:
        shared.client().ping()
    except redis.RedisError as error:
        return {"ok": False, "error": str(error)[:300]}
    return {"ok": True}


def _check_queues() -> dict:
    """Which workers consume each queue, according to the workers themselves."""
    queues: dict[str, dict] = {name: {"ok": False, "workers": []} for name in settings.CELERY_QUEUES_ALL}
    try:
        replies = app.control.inspect(timeout=1.0).active_queues() or {}
    except Exception as error:  # noqa: BLE001
        for queue in queues.values():
            queue["error"] = str(error)[:300]
        return queues
    for worker, consumed in sorted(replies.items()):
        for queue in consumed:
            if queue["name"] in queues:
                queues[queue["name"]]["workers"].append(worker)
                queues[queue["name"]]["ok"] = True
    try:  # each agents worker's serving core: queue, rows, KV use, tokens/s, time to first token
        serving = llm.published_metrics()
    except Exception:  # noqa: BLE001  (the numbers are extra; the check above already ran)
        serving = {}
    if serving:
        for queue in queues.values():
            queue["serving"] = {w: serving[w] for w in queue["workers"] if w in serving}
    return queues


@never_cache
@require_GET
def healthz(request):
    started = time.monotonic()
    database = _check_database()
    redis_status = _check_redis()
    if redis_status["ok"]:
        queues = _check_queues()
    else:
        queues = {name: {"ok": False, "workers": [], "error": "Redis is down"}
                  for name in settings.CELERY_QUEUES_ALL}
    ok = database["ok"] and redis_status["ok"] and all(q["ok"] for q in queues.values())
    body: dict = {"status": "ok" if ok else "down"}
    if request.user.is_authenticated and request.user.is_staff:
        body |= {"database": database, "redis": redis_status, "queues": queues,
                 "seconds": round(time.monotonic() - started, 3)}
    return JsonResponse(body, status=200 if ok else 503)
