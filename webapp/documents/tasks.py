"""Celery tasks for documents. They take ids, load rows and call one service each."""

from __future__ import annotations

from celery import shared_task

from webapp.documents import services


@shared_task(name="documents.extract_source")
def extract_source(source_id: int) -> str:
    source = services.source_extract(source_id=source_id)
    return source.status if source else "deleted"
