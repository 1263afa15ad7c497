"""A plain completion on the `agents` queue: the smallest job that goes through a worker's engine.
The writing pipeline's tasks build on the same pieces (get_engine, role adapters, cancel flags)."""

from __future__ import annotations

import os
import uuid

from celery import shared_task

from agents.llm.types import GenerationRequest
from webapp import llm


@shared_task(name="agents.generate")
def generate(role: str, messages: list[dict[str, str]], max_new_tokens: int = 256, request_id: str = "") -> dict:
    request = GenerationRequest(id=request_id or uuid.uuid4().hex, messages=messages, max_new_tokens=max_new_tokens)
    engine = llm.get_engine(role)
    text, last = [], None
    for delta in engine.stream(llm.with_role_adapters([(role, request)]), cancel=llm.RedisCancelFlags()):
        text.append(delta.text)
        last = delta if delta.finished else last
    return {
        "text": "".join(text), "finish_reason": last.finish_reason, "error": last.error,
        "completion_tokens": last.completion_tokens,
        "adapter": request.adapter.name if request.adapter else None,
        "worker_pid": os.getpid(), "engine_id": id(engine),
    }


@shared_task(name="training.run_job", acks_late=False)
def run_job(job_id: int) -> None:
    """One training job, start to end (acknowledged at once: a job whose worker dies is marked
    failed with its checkpoint, not silently run again from the start)."""
    from webapp.registry import training

    training.run(job_id)
