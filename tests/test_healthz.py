"""/healthz reports the database, Redis and a worker per queue to staff (a bare status to anyone
else); 503 when any is down."""

from __future__ import annotations

import pytest

from tests.support.processes import free_port


@pytest.mark.slow
def test_up_with_a_worker_on_every_queue(transactional_db, admin_client, celery_worker_process):
    response = admin_client.get("/healthz")
    body = response.json()
    assert response.status_code == 200, body
    assert body["status"] == "ok" and body["database"]["ok"] and body["redis"]["ok"]
    assert all(queue["ok"] and queue["workers"] for queue in body["queues"].values())
    assert set(body["queues"]) == {"agents", "default", "training"}


def test_down_when_redis_is_unreachable(db, admin_client, settings):
    settings.REDIS_URL = f"redis://127.0.0.1:{free_port()}/0"
    response = admin_client.get("/healthz")
    body = response.json()
    assert response.status_code == 503
    assert body["status"] == "down" and body["redis"]["ok"] is False
    assert body["database"]["ok"] is True
    assert all(not queue["ok"] for queue in body["queues"].values())


def test_down_when_the_database_is_unreachable(db, admin_client, monkeypatch):
    from django.db.utils import OperationalError

    class Unreachable:
        vendor = "postgresql"

        def cursor(self):
            raise OperationalError("connection refused")

    monkeypatch.setattr("webapp.health.connection", Unreachable())
    response = admin_client.get("/healthz")
    assert response.status_code == 503
    assert response.json()["database"] == {"ok": False, "error": "connection refused"}


@pytest.mark.slow
def test_agents_workers_report_their_serving_core(transactional_db, admin_client, celery_worker_process):
    from tests.support.processes import wait_for
    from webapp.runs.tasks import generate

    generate.delay("writer", [{"role": "user", "content": "Gannets?"}], 4).get(timeout=120)  # the engine exists

    def serving():  # published every 2 s by the worker
        queue = admin_client.get("/healthz").json()["queues"]["agents"]
        cores = next(iter(queue.get("serving", {}).values()), {})
        return next((numbers for numbers in cores.values() if numbers["requests_total"]), None)

    numbers = wait_for(serving, timeout=15)
    assert numbers["generated_tokens_total"] >= 4
    # The same numbers as Prometheus text on the worker's own port.
    import urllib.request

    port = celery_worker_process.args_env["SCRIPTORIUM_WORKER_METRICS_PORT"]
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    assert "# TYPE scriptorium_llm_rows_running gauge" in text
    assert "scriptorium_llm_generated_tokens_total{" in text and 'model="' in text and 'worker="test-' in text
    assert {"queue_length", "rows_running", "kv_tokens_used", "kv_tokens_budget", "tokens_per_s",
            "time_to_first_token_seconds_count", "preemptions_total"} <= set(numbers)
    # Where it runs, how much of its device's memory it holds, and how loaded it is.
    assert numbers["device"].startswith("cpu") and numbers["dtype"] == "float32" and 0 <= numbers["load"] <= 1
    assert 0 < numbers["device_memory_used_bytes"] < numbers["device_memory_total_bytes"]
    assert 'device="cpu' in text and "scriptorium_llm_device_memory_used_bytes{" in text


def test_anyone_else_gets_the_status_alone(db, client, settings, editor):
    """No database vendor, error text or worker name for the public (a load balancer needs none)."""
    settings.REDIS_URL = f"redis://127.0.0.1:{free_port()}/0"
    assert client.get("/healthz").json() == {"status": "down"}
    client.force_login(editor)
    assert client.get("/healthz").json() == {"status": "down"}
