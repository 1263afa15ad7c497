"""Celery tasks for documents. They take ids, load rows and call one service each."""

from __future__ import annotations

from celery import shared_task

from webapp.documents import sources


@shared_task(name=sources.EXTRACT_TASK)
def extract_source(source_id: int) -> str:
    source = sources.source_extract(source_id=source_id)
    return source.status if source else "deleted"
