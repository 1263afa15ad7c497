"""Markdown, HTML and DOCX exports, each opened back with its own reader."""

from __future__ import annotations

import io
from html.parser import HTMLParser

from django.urls import reverse

from tests.support.factories import PASSWORD
from webapp.documents import export, services


def _write(document, owner):
    intro, gulls, terns = (document.sections.get(heading=h) for h in ("Introduction", "Gulls", "Terns"))
    services.section_move(section=terns, user=owner, direction="indent")  # Terns under Gulls
    for section, text in ((intro, "Welcome to the **coast**.\n\nBring binoculars."),
                          (gulls, "Gulls <script>alert('x')</script> are loud."),
                          (terns, "- Arctic tern\n- Common tern")):
        section.refresh_from_db()
        services.section_save_text(section_id=section.id, user=owner, text=text, expected_version=section.version)


def _get(client, document, fmt):
    response = client.get(reverse("document_export", args=[document.id, fmt]))
    assert response.status_code == 200
    assert f'.{fmt}"' in response["Content-Disposition"]
    return response.content


def test_markdown_export_nests_headings(client, document, owner, viewer):
    _write(document, owner)
    client.login(username=viewer.username, password=PASSWORD)
    lines = _get(client, document, "md").decode().splitlines()
    headings = [line for line in lines if line.startswith("#")]
    assert headings == ["# Coastal birds", "## Introduction", "## Gulls", "### Terns"]
    assert "Welcome to the **coast**." in lines


def test_html_export_nests_headings_and_strips_scripts(client, document, owner, viewer):
    _write(document, owner)
    client.login(username=viewer.username, password=PASSWORD)
    html = _get(client, document, "html").decode()

    class Reader(HTMLParser):
        def __init__(self):
            super().__init__()
            self.tags: list[tuple[str, str]] = []
            self.current = None

        def handle_starttag(self, tag, attrs):
            self.current = tag
            self.tags.append((tag, ""))

        def handle_endtag(self, tag):
            self.current = None

        def handle_data(self, data):
            if self.current and data.strip():
                self.tags[-1] = (self.tags[-1][0], self.tags[-1][1] + data.strip())

    reader = Reader()
    reader.feed(html)
    headings = [(tag, text) for tag, text in reader.tags if tag in ("h1", "h2", "h3")]
    assert headings == [("h1", "Coastal birds"), ("h2", "Introduction"), ("h2", "Gulls"), ("h3", "Terns")]
    assert ("strong", "coast") in reader.tags
    assert [text for tag, text in reader.tags if tag == "li"] == ["Arctic tern", "Common tern"]
    assert "script" not in [tag for tag, _ in reader.tags]


def test_docx_export_opens_in_python_docx(client, document, owner, viewer):
    from docx import Document as DocxDocument

    _write(document, owner)
    client.login(username=viewer.username, password=PASSWORD)
    docx = DocxDocument(io.BytesIO(_get(client, document, "docx")))
    styled = [(p.style.name, p.text) for p in docx.paragraphs if p.text]
    assert styled[0] == ("Title", "Coastal birds")
    assert ("Heading 1", "Introduction") in styled and ("Heading 2", "Terns") in styled
    assert ("List Bullet", "Arctic tern") in styled
    bold = [run.text for p in docx.paragraphs for run in p.runs if run.bold]
    assert bold == ["coast"]


TRICKY = {
    "Introduction": "The <<Ancestral Alexandria>> scrolls & the \"Great\" library's 'lost' books.",
    "Gulls": "A gull's rule: if a < b && c > d, keep <b>calm</b>; AT&T &amp; co.",
    "Terns": "```\nif tide < 3 and wind > 5:\n    print(\"<stay>\")\n```",
}


def test_angle_brackets_ampersands_quotes_and_code_survive_every_export(client, document, owner, viewer):
    """Text a person or an agent wrote comes out whole, escaped where the format needs it: in
    HTML a `<...>` is text, never a tag the sanitiser would drop with its contents."""
    from html.parser import HTMLParser

    from docx import Document as DocxDocument

    for heading, text in TRICKY.items():
        section = document.sections.get(heading=heading)
        services.section_save_text(section_id=section.id, user=owner, text=text, expected_version=section.version)
    client.login(username=viewer.username, password=PASSWORD)

    markdown_text = _get(client, document, "md").decode()
    assert all(text in markdown_text for text in TRICKY.values())

    class Text(HTMLParser):
        def __init__(self):
            super().__init__(convert_charrefs=True)
            self.text, self.tags = "", []

        def handle_starttag(self, tag, attrs):
            self.tags.append(tag)

        def handle_data(self, data):
            self.text += data

    html = _get(client, document, "html").decode()
    assert '<meta name="viewport" content="width=device-width, initial-scale=1">' in html  # reads on a phone
    page = Text()
    page.feed(html)
    assert TRICKY["Introduction"] in page.text
    assert "if a < b && c > d, keep <b>calm</b>; AT&T &amp; co." not in page.text  # "&amp;" is an entity
    assert "if a < b && c > d, keep <b>calm</b>; AT&T & co." in page.text and "b" not in page.tags
    assert 'if tide < 3 and wind > 5:\n    print("<stay>")' in page.text and "pre" in page.tags

    docx = DocxDocument(io.BytesIO(_get(client, document, "docx")))
    written = "\n".join(p.text for p in docx.paragraphs)
    assert TRICKY["Introduction"] in written and "if a < b && c > d, keep <b>calm</b>" in written
    assert 'print("<stay>")' in written


def test_a_title_past_the_docx_property_limit_still_exports(document):
    """DOCX's title property holds 255 characters; a 300-character title made the export a 500."""
    document.title = "Seabirds " * 33  # 297 characters
    document.save()
    from docx import Document as DocxDocument

    docx = DocxDocument(io.BytesIO(export.document_docx(document)))
    assert docx.paragraphs[0].text == document.title and len(docx.core_properties.title) == 255
