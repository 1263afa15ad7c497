"""The serving core on a CUDA device (run where a GPU is lent; skipped elsewhere): 64 concurrent
section requests in one continuous batch, each writing what it writes alone."""

from __future__ import annotations

import pytest

from agents.llm.transformers_backend import TransformersEngine
from agents.llm.types import GenerationRequest
from tests.support.streams import collect as _text


@pytest.mark.gpu
def test_64_concurrent_requests_on_the_gpu_core(tiny_model_dir):
    engine = TransformersEngine(tiny_model_dir, dtype="float32", device="cuda", max_rows=64,
                                kv_budget_tokens=64 * 1024)
    try:
        assert not engine.packed and engine.core.kv.device == "cuda"
        requests = [GenerationRequest(id=f"s{i}", prompt=f"Section {i} about the harbour:", max_new_tokens=40)
                    for i in range(64)]
        texts, ends = _text(engine, requests)
        assert all(end.finish_reason == "length" and end.completion_tokens == 40 for end in ends.values())
        metrics = engine.core.metrics()
        assert metrics["generated_tokens_total"] == 64 * 40 and metrics["requests_total"] == 64
        assert engine.core.device_name.startswith("cuda:0 (")  # e.g. "cuda:0 (NVIDIA H200)"
        assert 0 < metrics["device_memory_used_bytes"] <= metrics["device_memory_reserved_bytes"] \
            < metrics["device_memory_total_bytes"]
        for request in requests[:4]:
            assert _text(engine, [request])[0][request.id] == texts[request.id]
    finally:
        engine.close()


@pytest.mark.gpu
@pytest.mark.slow
def test_an_agents_worker_serves_on_its_gpu_in_bf16_and_reports_the_device(transactional_db, redis_server,
                                                                           tiny_model_dir, tmp_path):
    """What `launcher run --only agents` starts on a GPU machine: a worker that sees one device
    (CUDA_VISIBLE_DEVICES), serves in bf16 there, and publishes its device, memory and load."""
    import os
    import subprocess
    import sys
    import uuid

    from django.conf import settings

    from tests.support.processes import ROOT, database_url_for_subprocess, wait_for
    from webapp import llm
    from webapp.celery import app

    queue, name = f"agents-{uuid.uuid4().hex[:6]}", f"gpu-{uuid.uuid4().hex[:6]}"
    env = dict(os.environ, DATABASE_URL=database_url_for_subprocess(), REDIS_URL=redis_server,
               SCRIPTORIUM_DATA_DIR=str(settings.DATA_DIR), SCRIPTORIUM_MODEL=str(tiny_model_dir),
               SCRIPTORIUM_AGENTS_QUEUE=queue, CUDA_VISIBLE_DEVICES="0", SCRIPTORIUM_LLM_DTYPE="auto")
    env.pop("SCRIPTORIUM_LLM_DEVICE", None)
    log = tmp_path / "worker.log"
    with open(log, "w") as out:
        worker = subprocess.Popen([sys.executable, "-m", "celery", "-A", "webapp", "worker", "-Q", queue, "--pool",
                                   "threads", "--concurrency", "4", "-n", f"{name}@%h"], cwd=ROOT, env=env,
                                  stdout=out, stderr=subprocess.STDOUT)
    try:
        messages = [{"role": "user", "content": "Gannets?"}]
        answer = app.send_task("agents.generate", args=["writer", messages, 8], queue=queue).get(timeout=180)
        assert answer["finish_reason"] == "length", (answer, log.read_text()[-3000:])
        numbers = wait_for(lambda: next((models for worker_name, models in llm.published_metrics().items()
                                         if worker_name.startswith(name)), None), timeout=15)
        core = next(iter(numbers.values()))
        assert core["device"].startswith("cuda:0 (") and core["dtype"] == "bfloat16"
        assert 0 < core["device_memory_used_bytes"] < core["device_memory_total_bytes"]
        assert core["generated_tokens_total"] >= 8 and 0 <= core["load"] <= 1
    finally:
        worker.terminate()
        worker.wait(timeout=30)
