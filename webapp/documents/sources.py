"""A project's reference files: upload, text extraction and passage embeddings (on the default
queue), and the passages nearest a query, which writers cite.

The embedding model (agents/retrieval.py, torch) is imported by the two functions that embed, so
the web process, which only uploads and lists sources, never loads torch."""

from __future__ import annotations

import logging
import re
import time
import unicodedata
from pathlib import Path

from django.conf import settings
from django.core.files.uploadedfile import UploadedFile
from django.db import transaction
from django.utils import timezone

from agents.llm.files import ModelFolderError
from webapp import events
from webapp.celery import enqueue
from webapp.documents import extract
from webapp.documents.models import Source, SourceChunk, SourceStatus
from webapp.projects.models import Project

log = logging.getLogger(__name__)

EXTRACT_TASK = "documents.extract_source"
INDEX_TASK = "documents.index_source"
INDEX_BATCH = 32  # passages embedded, then saved, at a time


class SourceRejected(Exception):
    """An upload refused before anything was stored; the message is shown to the user."""


# --- sources -------------------------------------------------------------------------------

def source_kind_for(filename: str) -> str:
    suffix = Path(filename).suffix.lower()
    kind = settings.SOURCE_EXTENSIONS.get(suffix)
    if kind is None:
        allowed = ", ".join(sorted(settings.SOURCE_EXTENSIONS))
        raise SourceRejected(f"“{filename}” is not a supported type. Upload one of: {allowed}.")
    return kind


@transaction.atomic
def source_upload(*, project: Project, user, upload: UploadedFile, title: str = "") -> Source:
    """Store an uploaded reference file and queue its text extraction on the default queue."""
    kind = source_kind_for(upload.name)
    limit = settings.SOURCE_MAX_BYTES
    if upload.size > limit:
        raise SourceRejected(
            f"“{upload.name}” is {upload.size / 1_048_576:.1f} MB; the limit is "
            f"{limit / 1_048_576:.1f} MB per file."
        )
    if upload.size == 0:
        raise SourceRejected(f"“{upload.name}” is empty.")
    name = Path(upload.name).name
    source = Source(project=project, title=(title or Path(name).stem)[:300], original_name=name[:300],
                    kind=kind, size=upload.size, uploaded_by=user)
    source.file.save(_stored_name(name), upload, save=False)
    try:
        source.save()
    except Exception:
        source.file.delete(save=False)  # no row, no file
        raise
    _queue_extraction(source.pk)
    return source


def _stored_name(name: str) -> str:
    """A file name any file system takes: ASCII, at most 100 characters, its extension kept."""
    path = Path(name)
    ascii_stem = unicodedata.normalize("NFKD", path.stem).encode("ascii", "ignore").decode()
    stem = re.sub(r"[^\w-]+", "_", ascii_stem).strip("_")[:80] or "upload"
    suffix = re.sub(r"[^\w.]+", "", path.suffix.encode("ascii", "ignore").decode())[:10]
    return stem + suffix


def _queue_extraction(source_id: int) -> None:
    enqueue(EXTRACT_TASK, source_id, on_error=lambda error: source_failed(
        source_id=source_id, reason="The file is stored, but its reading could not be queued (the task queue "
                                    "is unreachable). Press Retry when the service is back."))


def source_retry(*, source: Source) -> Source:
    """Read a failed source again (after a broker outage, or a reader that improved)."""
    with transaction.atomic():
        _set_source_status(source, SourceStatus.PENDING)
        _queue_extraction(source.pk)
    return source


def _set_source_status(source: Source, status: str, error: str = "") -> None:
    source.status, source.error = status, error
    fields = ["status", "error"]
    if status in (SourceStatus.READY, SourceStatus.FAILED):
        source.processed_at = timezone.now()
        fields.append("processed_at")
    source.save(update_fields=fields)
    events.send(events.SourceStatusChanged(project_id=source.project_id, source_id=source.id, status=status,
                                           error=error))


def source_failed(*, source_id: int, reason: str) -> None:
    source = Source.objects.filter(pk=source_id).first()
    if source is not None:
        with transaction.atomic():
            _set_source_status(source, SourceStatus.FAILED, reason)


def source_extract(*, source_id: int) -> Source | None:
    """Extract and chunk a source's text. Safe to run twice: the chunks are replaced whole.
    Whatever goes wrong, the source ends "failed" with the reason, never "processing"."""
    source = Source.objects.filter(pk=source_id).first()
    if source is None:  # deleted before the worker got to it
        return None
    with transaction.atomic():
        _set_source_status(source, SourceStatus.PROCESSING)
    try:
        return _extract(source)
    except Exception as error:  # noqa: BLE001  (recorded on the source; the log has the trace)
        log.exception("extracting source %s failed", source_id)
        source_failed(source_id=source_id, reason=f"The file could not be processed ({type(error).__name__}).")
        return Source.objects.filter(pk=source_id).first()


def _extract(source: Source) -> Source:
    try:
        with source.file.open("rb") as handle:
            text = extract.extract_text_isolated(handle.read(), source.kind)
    except (extract.ExtractionError, OSError) as error:  # OSError: the stored file is gone or unreadable
        with transaction.atomic():
            _set_source_status(source, SourceStatus.FAILED, str(error))
        return source
    chunks = extract.chunk_text(text)
    limit = settings.SOURCE_MAX_PASSAGES
    if len(chunks) > limit:  # refused before any of it is indexed: it could not finish in time
        with transaction.atomic():
            _set_source_status(source, SourceStatus.FAILED, (
                f"The text makes {len(chunks):,} passages; a source is indexed up to {limit:,} (about "
                f"{limit:,} kB of text). Split it into several files, or keep the parts the writers need."))
        return source
    with transaction.atomic():
        source.text, source.passages = text, len(chunks)
        source.save(update_fields=["text", "passages"])
        source.chunks.all().delete()
        SourceChunk.objects.bulk_create(
            SourceChunk(source=source, index=i, text=chunk.text, char_start=chunk.start, char_end=chunk.end)
            for i, chunk in enumerate(chunks))
    return source_index(source_id=source.pk)


def source_index(*, source_id: int) -> Source | None:
    """Embed a source's passages that have no embedding yet, in batches, for at most
    SOURCE_INDEX_SLICE_S; then, if some are left, queue this again (a worker is never tied up
    for long, and a killed one's work resumes where it stopped); the source is ready when all
    are. The source's page shows how many are done."""
    source = Source.objects.filter(pk=source_id, status=SourceStatus.PROCESSING).first()
    if source is None:  # deleted, or retried meanwhile
        return None
    from agents import retrieval

    started = time.monotonic()
    try:
        embedder = retrieval.default_embedder()
        while True:
            batch = list(source.chunks.filter(embedding__isnull=True).order_by("index")[:INDEX_BATCH])
            if not batch:
                break
            vectors = embedder.embed([chunk.text for chunk in batch])
            for chunk, vector in zip(batch, vectors, strict=True):
                chunk.embedding = retrieval.to_bytes(vector)
            SourceChunk.objects.bulk_update(batch, ["embedding"])
            _progress(source)
            if time.monotonic() - started >= settings.SOURCE_INDEX_SLICE_S:
                enqueue(INDEX_TASK, source.pk, on_error=lambda error: source_failed(
                    source_id=source_id, reason="Indexing could not be queued again (the task queue is "
                                                "unreachable). Press Retry when the service is back."))
                return source
    except (ModelFolderError, OSError) as error:
        with transaction.atomic():
            _set_source_status(source, SourceStatus.FAILED, f"The passages could not be indexed: {error}")
        return source
    with transaction.atomic():
        _set_source_status(source, SourceStatus.READY)
    return source


def _progress(source: Source) -> None:
    source.indexed = source.chunks.filter(embedding__isnull=False).count()
    source.save(update_fields=["indexed"])
    events.send(events.SourceStatusChanged(project_id=source.project_id, source_id=source.id, status=source.status,
                                           error=""))


def source_passages(*, project: Project, query: str, k: int = 4) -> list[tuple[SourceChunk, float]]:
    """The k passages of the project's ready sources closest in meaning to `query`, best first."""
    from agents import retrieval

    chunks = list(SourceChunk.objects.filter(source__project=project, source__status=SourceStatus.READY,
                                             embedding__isnull=False).select_related("source"))
    if not chunks:
        return []
    matrix = retrieval.stack([bytes(chunk.embedding) for chunk in chunks])
    query_vector = retrieval.default_embedder().embed([query])[0]
    return [(chunks[i], score) for i, score in retrieval.top_passages(query_vector, matrix, k)]


@transaction.atomic
def source_delete(*, source: Source) -> None:
    storage, name = source.file.storage, source.file.name
    source.delete()
    transaction.on_commit(lambda: storage.delete(name))
