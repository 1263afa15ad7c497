"""A real `agents` worker creates its engine once and reuses it for every task, and picks up a
newly activated adapter version on the next task without a restart."""

from __future__ import annotations

from pathlib import Path

from tests.support.factories import vouched
from webapp.registry import services
from webapp.runs.tasks import generate

MESSAGES = [{"role": "user", "content": "Write about gannets."}]


def test_one_engine_per_worker_process_and_live_adapter_switch(transactional_db, celery_worker_process,
                                                                tiny_model_dir, tiny_adapters):
    first = generate.delay("writer", MESSAGES, 6).get(timeout=120)
    second = generate.delay("writer", MESSAGES, 6).get(timeout=60)
    assert first["finish_reason"] == "length" and first["completion_tokens"] == 6 and first["text"]
    assert (first["worker_pid"], first["engine_id"]) == (second["worker_pid"], second["engine_id"])
    assert first["adapter"] is None and second["text"] == first["text"]

    base = services.base_model_register(name=Path(tiny_model_dir).name, path=str(tiny_model_dir))
    services.adapter_register(role="writer", path=str(tiny_adapters["writer"]), base_model=base, activate=True,
                              override=vouched())
    third = generate.delay("writer", MESSAGES, 6).get(timeout=60)
    assert third["adapter"] == "writer@1" and third["engine_id"] == first["engine_id"]
    assert third["text"] != first["text"]
