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
