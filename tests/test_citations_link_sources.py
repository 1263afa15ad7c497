"""Citations: a writer's [n] is the n-th passage it was given (kept on the section); the page
links each citation to its passage on the source's page, and exports number the passages the
whole article cites, in order of first citation, with a list of sources at the end."""

from __future__ import annotations

import io

from webapp.documents import export
from webapp.documents import services as documents
from webapp.documents.models import Source, SourceChunk, SourceStatus


def _source(project, owner, title, texts):
    source = Source.objects.create(project=project, title=title, original_name=f"{title}.txt", kind="txt",
                                   status=SourceStatus.READY, uploaded_by=owner, file="sources/x.txt")
    return [SourceChunk.objects.create(source=source, index=i, text=text, char_start=0, char_end=len(text))
            for i, text in enumerate(texts)]


def _cited_document(document, owner):
    tides = _source(document.project, owner, "Tide tables", ["The moon pulls the sea.", "Spring tides are high."])
    gulls = _source(document.project, owner, "Gull notes", ["Gulls eat <b>anything</b>."])
    texts = {"Introduction": ("The moon drives tides [1]. Spring tides are the highest [2].",
                              [tides[0].pk, tides[1].pk]),
             "Gulls": ("Gulls eat anything [1] and like tides [2]. Unknown [7].", [gulls[0].pk, tides[1].pk])}
    for heading, (text, cited) in texts.items():
        section = document.sections.get(heading=heading)
        documents.section_save_text(section_id=section.id, user=owner, text=text, expected_version=section.version)
        document.sections.filter(pk=section.pk).update(citations=cited)
    return tides, gulls


def test_exports_number_citations_across_the_article_and_list_the_sources(document, owner):
    tides, gulls = _cited_document(document, owner)
    markdown = export.document_markdown(document)
    assert "The moon drives tides [1]. Spring tides are the highest [2]." in markdown
    # In "Gulls" its own [1] is the third passage cited in the article, its [2] the second.
    assert "Gulls eat anything [3] and like tides [2]. Unknown [7]." in markdown
    sources = markdown.split("## Sources\n", 1)[1]
    assert sources.index("1. Tide tables, passage 1") < sources.index("2. Tide tables, passage 2") \
        < sources.index("3. Gull notes, passage 1")

    html = export.document_html(document)
    assert "<h2>Sources</h2>" in html and "&lt;b&gt;anything&lt;/b&gt;" in html and "<b>" not in html
    from docx import Document as Docx

    paragraphs = [p.text for p in Docx(io.BytesIO(export.document_docx(document))).paragraphs]
    assert "[3] Gull notes, passage 1: “Gulls eat <b>anything</b>.…”" in paragraphs


def test_the_page_links_each_citation_to_its_passage(client, document, owner):
    tides, gulls = _cited_document(document, owner)
    client.force_login(owner)
    page = client.get(f"/documents/{document.id}/").content.decode()
    tide_url = f"/projects/{document.project_id}/sources/{tides[1].source_id}/#chunk-1"
    gull_url = f"/projects/{document.project_id}/sources/{gulls[0].source_id}/#chunk-0"
    assert f'<a href="{tide_url}" title="Tide tables, passage 2" rel="noopener noreferrer">[2]</a>' in page
    assert f'<a href="{gull_url}" title="Gull notes, passage 1" rel="noopener noreferrer">[3]</a>' in page
    assert "Unknown [7]" in page  # no passage behind it: left as written
    assert 'id="references"' in page and "Gull notes, passage 1" in page
    source_page = client.get(tide_url.split("#")[0]).content.decode()
    assert 'id="chunk-1"' in source_page
