"""Reference files: type and size limits with clear messages, and text extracted and chunked
(for a PDF, by a real Celery worker process on Redis)."""

from __future__ import annotations

import uuid

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.urls import reverse

from tests.support.factories import PASSWORD, make_pdf, make_project, make_user
from tests.support.processes import wait_for
from webapp.documents import extract, sources
from webapp.documents.models import Source, SourceStatus


def _upload(client, project, name, data, **extra):
    return client.post(reverse("source_list", args=[project.id]),
                       {"file": SimpleUploadedFile(name, data), "title": "", **extra}, follow=True)


def test_unsupported_type_is_refused_with_the_allowed_list(client, project, editor):
    client.login(username=editor.username, password=PASSWORD)
    body = _upload(client, project, "virus.exe", b"MZ...").content.decode()
    assert "is not a supported type" in body and ".pdf" in body
    assert not Source.objects.exists()


@pytest.mark.parametrize(("size", "message"), [
    (5_000, "the limit is"),  # read, then refused by the service
    (200_000, "That upload is 0.2 MB"),  # refused from Content-Length before the body is read
])
def test_oversized_upload_is_refused_and_nothing_is_stored(client, project, editor, settings, size, message):
    settings.SOURCE_MAX_BYTES = 1000
    client.login(username=editor.username, password=PASSWORD)
    body = _upload(client, project, "big.txt", b"x" * size).content.decode()
    assert message in body
    assert not Source.objects.exists()


def test_empty_file_is_refused(client, project, editor):
    client.login(username=editor.username, password=PASSWORD)
    body = _upload(client, project, "empty.md", b"").content.decode()
    assert "empty" in body
    assert not Source.objects.exists()


def test_viewers_cannot_upload(client, project, viewer):
    client.login(username=viewer.username, password=PASSWORD)
    response = client.post(reverse("source_list", args=[project.id]),
                           {"file": SimpleUploadedFile("a.txt", b"hello")})
    assert response.status_code == 403 and not Source.objects.exists()


def test_html_extraction_drops_scripts_and_keeps_paragraphs():
    html = b"<html><head><title>T</title><style>p{}</style></head><body><h1>Terns</h1>" \
           b"<p>Arctic terns fly far.</p><script>evil()</script><p>They nest in colonies &amp; dive.</p></body></html>"
    text = extract.extract_text(html, "html")
    assert text == "Terns\n\nArctic terns fly far.\n\nThey nest in colonies & dive."


def test_pdf_extraction_reads_a_real_pdf():
    text = extract.extract_text(make_pdf(["Puffins live on cliffs.", "They eat sand eels."]), "pdf")
    assert "Puffins live on cliffs." in text and "They eat sand eels." in text


def test_broken_pdf_and_binary_text_fail_with_a_reason():
    for data, kind in ((b"%PDF-1.4 garbage", "pdf"), (b"\x00\x01\x02binary" * 10, "text")):
        try:
            extract.extract_text(data, kind)
        except extract.ExtractionError as error:
            assert str(error)
        else:
            raise AssertionError(f"{kind} should have failed")


def test_chunks_cover_the_text_and_end_at_sentence_boundaries():
    sentences = [f"Sentence number {i} is about seabirds and their habits." for i in range(200)]
    text = " ".join(sentences)
    chunks = extract.chunk_text(text, size=500, overlap=100)
    assert len(chunks) > 10
    assert chunks[0].start == 0 and chunks[-1].end == len(text)
    for before, after in zip(chunks, chunks[1:], strict=False):
        assert after.start < before.end  # overlapping, so nothing falls between two chunks
        assert before.text.endswith(".")
        assert len(before.text) <= 500


def test_extraction_failure_is_recorded_on_the_source(project, editor):
    source = sources.source_upload(project=project, user=editor,
                                    upload=SimpleUploadedFile("scan.pdf", b"%PDF-1.4 not really"))
    sources.source_extract(source_id=source.id)
    source.refresh_from_db()
    assert source.status == SourceStatus.FAILED and "PDF" in source.error


def test_a_hostile_pdf_ends_failed_with_a_reason_never_processing(project, editor):
    """Arrays nested 20,000 deep in a page's content (RecursionError in the reader, which the
    worker did not catch: the source stayed "processing" forever)."""
    hostile = make_pdf(["Tides."], raw_ops="[" * 20_000 + "]" * 20_000 + " TJ")
    source = sources.source_upload(project=project, user=editor, upload=SimpleUploadedFile("deep.pdf", hostile))
    sources.source_extract(source_id=source.id)
    source.refresh_from_db()
    assert source.status == SourceStatus.FAILED and "nested too deeply" in source.error


def test_extraction_runs_in_a_child_with_time_and_memory_limits():
    pdf = make_pdf(["Puffins live on cliffs."])
    assert "Puffins" in extract.extract_text_isolated(pdf, "pdf")
    with pytest.raises(extract.ExtractionError, match="longer than"):
        extract.extract_text_isolated(pdf, "pdf", seconds=0.01)
    with pytest.raises(extract.ExtractionError, match="more time or memory"):
        extract.extract_text_isolated(pdf, "pdf", memory=32 << 20)  # not even enough to start Python's reader


def test_anything_unexpected_while_indexing_ends_the_source_failed(project, editor, monkeypatch):
    from agents import retrieval

    class Broken:
        def embed(self, texts):
            raise RuntimeError("the embedder fell over")

    monkeypatch.setattr(retrieval, "default_embedder", lambda: Broken())
    source = sources.source_upload(project=project, user=editor, upload=SimpleUploadedFile("a.txt", b"Terns dive."))
    sources.source_extract(source_id=source.id)
    source.refresh_from_db()
    assert source.status == SourceStatus.FAILED and "RuntimeError" in source.error


def test_a_real_worker_extracts_an_uploaded_pdf(transactional_db, client, celery_worker_process):
    """The web process stores the file and enqueues; a separate worker process on Redis extracts."""
    editor = make_user("edna")
    project = make_project(editor, name="Seabirds")
    client.login(username=editor.username, password=PASSWORD)
    pdf = make_pdf(["Gannets dive at sixty miles an hour.", "They breed on Bass Rock."])
    response = _upload(client, project, "gannets.pdf", pdf)
    assert response.status_code == 200
    source = Source.objects.get(project=project)

    def ready():
        source.refresh_from_db()
        return source.status in (SourceStatus.READY, SourceStatus.FAILED)

    wait_for(ready, timeout=60)
    assert source.status == SourceStatus.READY, source.error
    assert "Gannets dive at sixty miles an hour." in source.text
    assert source.chunks.count() >= 1 and "Bass Rock" in source.chunks.first().text
    page = client.get(reverse("source_detail", args=[project.id, source.id])).content.decode()
    assert "Bass Rock" in page and "Ready" in page


def test_members_download_the_original_file_as_an_attachment(client, project, editor, viewer):
    html = b"<p>Shearwaters</p><script>steal()</script>"
    source = sources.source_upload(project=project, user=editor,
                                    upload=SimpleUploadedFile("birds.html", html))
    client.login(username=viewer.username, password=PASSWORD)
    response = client.get(reverse("source_download", args=[project.id, source.id]))
    assert response.status_code == 200
    assert b"".join(response.streaming_content) == html
    assert response["Content-Disposition"].startswith('attachment; filename="birds.html"')
    assert response["Content-Type"] == "application/octet-stream"


def test_passages_are_found_by_meaning(project, editor):
    texts = {
        "gannets.txt": "Gannets plunge into the sea from thirty metres to catch mackerel and herring.",
        "printing.txt": "Gutenberg's press used movable metal type and oil-based ink around 1450.",
        "tides.txt": "Spring tides follow the full and new moon, when the sun and moon pull together.",
    }
    for name, text in texts.items():
        source = sources.source_upload(project=project, user=editor, upload=SimpleUploadedFile(name, text.encode()))
        sources.source_extract(source_id=source.id)
    found = sources.source_passages(project=project, query="seabirds diving for fish", k=2)
    assert found[0][0].source.original_name == "gannets.txt"
    assert found[0][1] > found[1][1]
    found = sources.source_passages(project=project, query="history of books and typography", k=1)
    assert found[0][0].source.original_name == "printing.txt"


def test_an_upload_whose_row_cannot_be_saved_leaves_no_file(project, editor, monkeypatch, settings):
    from pathlib import Path

    def broken(*args, **kwargs):
        raise RuntimeError("the database refused the row")

    monkeypatch.setattr(Source, "save", broken)
    name = f"orphan-{uuid.uuid4().hex[:8]}"  # other test processes store files in the same folder

    with pytest.raises(RuntimeError):
        sources.source_upload(project=project, user=editor,
                              upload=SimpleUploadedFile(f"{name}.txt", b"Terns dive."))
    assert [path for path in Path(settings.MEDIA_ROOT).rglob(f"{name}*")] == []


def test_with_the_broker_down_an_upload_is_kept_failed_with_a_retry(client, project, editor, monkeypatch,
                                                                    django_capture_on_commit_callbacks):
    from webapp.celery import app

    def unreachable(*args, **kwargs):
        raise ConnectionRefusedError("the broker is down")

    monkeypatch.setattr(app, "send_task", unreachable)
    client.login(username=editor.username, password=PASSWORD)
    with django_capture_on_commit_callbacks(execute=True):
        response = _upload(client, project, "notes.txt", b"Gannets dive from great heights.")
    assert response.status_code == 200  # not a 500: the file and its row are kept
    source = Source.objects.get(project=project)
    assert source.status == SourceStatus.FAILED and "Retry" in source.error
    page = client.get(reverse("source_detail", args=[project.id, source.id])).content.decode()
    assert ">Retry</button>" in page
    queued = []
    monkeypatch.setattr(app, "send_task", lambda name, args, countdown=None: queued.append((name, args)))
    with django_capture_on_commit_callbacks(execute=True):
        client.post(reverse("source_retry", args=[project.id, source.id]))
    source.refresh_from_db()
    assert source.status == SourceStatus.PENDING and queued == [(sources.EXTRACT_TASK, [source.id])]


def test_a_long_accented_file_name_is_stored_under_a_short_ascii_one(project, editor):
    name = "é" * 200 + ".txt"
    source = sources.source_upload(project=project, user=editor, upload=SimpleUploadedFile(name, b"Skuas chase."))
    stored = source.file.name.rsplit("/", 1)[-1]
    assert stored.isascii() and len(stored.encode()) < 120 and stored.endswith(".txt")
    assert source.original_name == name


def test_a_source_with_more_passages_than_the_limit_fails_at_once_with_the_count(project, editor, settings,
                                                                                 monkeypatch):
    """Issue 26: a 10 MB text of one line made ~10,000 passages whose embedding would take ~44
    minutes, against the task's 180 s: it tied a worker up and failed. Now it is refused before
    any embedding, saying why."""
    from agents import retrieval

    settings.SOURCE_MAX_PASSAGES = 5
    monkeypatch.setattr(retrieval, "default_embedder", lambda: pytest.fail("nothing should be embedded"))
    text = " ".join(f"Seabird fact number {i} is here." for i in range(400)).encode()  # one line, ~12 kB
    source = sources.source_upload(project=project, user=editor, upload=SimpleUploadedFile("big.txt", text))
    sources.source_extract(source_id=source.id)
    source.refresh_from_db()
    assert source.status == SourceStatus.FAILED and "passages; a source is indexed up to 5" in source.error


def test_indexing_goes_in_slices_that_resume_and_show_progress(client, project, editor, settings, monkeypatch):
    """Each slice embeds for at most SOURCE_INDEX_SLICE_S, then queues the next; the page shows
    how far it is; the source is ready when every passage has its embedding."""
    settings.SOURCE_INDEX_SLICE_S = 0  # one batch a slice
    queued: list[tuple] = []
    monkeypatch.setattr(sources, "enqueue", lambda name, *args, **kw: queued.append((name, *args)))
    text = "\n\n".join(f"Paragraph {i}: terns dive for sand eels near the shore, again and again." * 12
                       for i in range(40)).encode()
    source = sources.source_upload(project=project, user=editor, upload=SimpleUploadedFile("long.txt", text))
    queued.clear()
    sources.source_extract(source_id=source.id)
    source.refresh_from_db()
    assert source.status == SourceStatus.PROCESSING and source.passages > sources.INDEX_BATCH
    assert source.indexed == sources.INDEX_BATCH and queued == [(sources.INDEX_TASK, source.id)]
    client.login(username=editor.username, password=PASSWORD)
    page = client.get(reverse("source_detail", args=[project.id, source.id])).content.decode()
    assert f"Indexing: {sources.INDEX_BATCH} of {source.passages} passages" in page
    while queued:
        queued.pop()
        sources.source_index(source_id=source.id)  # as the next task would
    source.refresh_from_db()
    assert source.status == SourceStatus.READY and source.indexed == source.passages
    assert not source.chunks.filter(embedding__isnull=True).exists()


def test_a_pdf_is_read_for_its_structure_first_and_a_slow_page_is_refused_in_seconds(monkeypatch):
    """Issue 26: a small malformed PDF waited for the reader's full 60 s. A file with no PDF
    header is refused without starting a reader; a damaged structure in the first pass; and
    one page that takes longer than PAGE_SECONDS is refused then."""
    import time

    from pypdf import PageObject

    with pytest.raises(extract.ExtractionError, match="not a PDF"):
        extract.extract_text_isolated(b"<html>not a pdf</html>", "pdf")
    with pytest.raises(extract.ExtractionError, match="structure is damaged"):
        extract.extract_text_isolated(b"%PDF-1.4\n1 0 obj << /Type /Catalog /Pages 2 0 R >>\n" * 3, "pdf")
    monkeypatch.setattr(extract, "PAGE_SECONDS", 0.5)
    monkeypatch.setattr(PageObject, "extract_text", lambda self, *args, **kwargs: time.sleep(5) or "late")
    began = time.monotonic()
    with pytest.raises(extract.ExtractionError, match="Page 1 of the PDF could not be read in 0.5 s"):
        extract.extract_text(make_pdf(["Puffins."]), "pdf")
    assert time.monotonic() - began < 2
