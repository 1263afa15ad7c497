"""Celery tasks of writing runs, all on the agents queue. They take ids and call one service;
services queue them by name (lifecycle.*_TASK), so nothing below imports this module."""

from __future__ import annotations

import logging
import os
import uuid

from celery import shared_task

from agents.llm.types import GenerationRequest
from webapp import llm
from webapp.runs import asking, discussing, lifecycle, reviewing, services, writing

log = logging.getLogger(__name__)


@shared_task(name=lifecycle.PLAN_TASK)
def plan_run(run_id: int) -> str:
    return services.run_plan(run_id=run_id).status


@shared_task(name=lifecycle.WRITE_TASK)
def write_batch(run_id: int, task_ids: list[int]) -> None:
    writing.run_write_batch(run_id=run_id, task_ids=task_ids)


@shared_task(name=lifecycle.REVIEW_TASK)
def review_run(run_id: int) -> None:
    reviewing.run_review(run_id=run_id)


@shared_task(name=lifecycle.ASK_TASK)
def ask_about_passage(suggestion_id: int) -> None:
    asking.answer(suggestion_id=suggestion_id)


@shared_task(name=lifecycle.REPLY_TASK)
def reply_in_thread(comment_id: int) -> None:
    discussing.reply(comment_id=comment_id)


@shared_task(name=lifecycle.GENERATE_TASK)
def generate(role: str, messages: list[dict[str, str]], max_new_tokens: int = 256, request_id: str = "") -> dict:
    """A plain completion through this worker's engine, with the role's adapter: the smallest job
    that goes through a worker (tests and health checks use it). Cancelled by setting the flag
    named by its request id (webapp.redis.CancelFlags)."""
    request = GenerationRequest(id=request_id or uuid.uuid4().hex, messages=messages, max_new_tokens=max_new_tokens)
    engine = llm.get_engine(role)
    text, last = [], None
    for delta in engine.stream(llm.with_role_adapters([(role, request)]), cancel=lifecycle.flags):
        text.append(delta.text)
        last = delta if delta.finished else last
    return {
        "text": "".join(text), "finish_reason": last.finish_reason, "error": last.error,
        "completion_tokens": last.completion_tokens,
        "adapter": request.adapter.name if request.adapter else None,
        "worker_pid": os.getpid(), "engine_id": id(engine),
    }
