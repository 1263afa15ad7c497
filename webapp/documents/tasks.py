"""Celery tasks for documents. They take ids, load rows and call one service each."""

from __future__ import annotations

from celery import shared_task
from celery.exceptions import SoftTimeLimitExceeded
from django.conf import settings

from webapp.documents import sources


@shared_task(name=sources.EXTRACT_TASK, soft_time_limit=settings.SOURCE_EXTRACT_TIME_LIMIT_S,
             time_limit=settings.SOURCE_EXTRACT_TIME_LIMIT_S + 30)
def extract_source(source_id: int) -> str:
    try:
        source = sources.source_extract(source_id=source_id)
    except SoftTimeLimitExceeded:
        sources.source_failed(source_id=source_id, reason="Processing the file took too long.")
        return "failed"
    return source.status if source else "deleted"


@shared_task(name=sources.INDEX_TASK, soft_time_limit=settings.SOURCE_EXTRACT_TIME_LIMIT_S,
             time_limit=settings.SOURCE_EXTRACT_TIME_LIMIT_S + 30)
def index_source(source_id: int) -> str:
    try:
        source = sources.source_index(source_id=source_id)
    except SoftTimeLimitExceeded:
        sources.source_failed(source_id=source_id, reason="Indexing the passages took too long.")
        return "failed"
    except Exception as error:  # noqa: BLE001  (recorded on the source, never left "processing")
        sources.source_failed(source_id=source_id,
                              reason=f"The passages could not be indexed ({type(error).__name__}).")
        raise
    return source.status if source else "gone"
