"""A document written out as Markdown, HTML or DOCX, with headings nested as the section tree."""

from __future__ import annotations

import io
import re

import markdown
import nh3
from django.utils.html import escape

from webapp.documents.models import Document

# Tags that section text (Markdown) may turn into; anything else is stripped from the HTML.
ALLOWED_TAGS = {"p", "br", "em", "strong", "code", "pre", "blockquote", "ul", "ol", "li", "a",
                "h3", "h4", "h5", "h6", "hr", "table", "thead", "tbody", "tr", "th", "td", "sup", "sub"}


def _heading_level(depth: int) -> int:
    # The title is level 1; top-level sections are level 2, and so on down to 6.
    return min(depth + 2, 6)


def render_markdown_safe(text: str) -> str:
    """User or model text (Markdown) to HTML that is safe to put on a page."""
    html = markdown.markdown(text, extensions=["tables", "sane_lists"], output_format="html")
    return nh3.clean(html, tags=ALLOWED_TAGS, attributes={"a": {"href", "title"}},
                     url_schemes={"http", "https", "mailto"})


def document_markdown(document: Document) -> str:
    parts = [f"# {document.title}\n"]
    for section, depth, _ in document.section_tree():
        parts.append(f"{'#' * _heading_level(depth)} {section.heading}\n")
        if section.text.strip():
            parts.append(section.text.strip() + "\n")
    return "\n".join(parts)


def document_html(document: Document) -> str:
    body = [f"<h1>{escape(document.title)}</h1>"]
    for section, depth, _ in document.section_tree():
        level = _heading_level(depth)
        body.append(f"<h{level}>{escape(section.heading)}</h{level}>")
        if section.text.strip():
            body.append(render_markdown_safe(section.text))
    return (
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
        f"<title>{escape(document.title)}</title>"
        "<style>body{max-width:42rem;margin:2rem auto;font:1.05rem/1.6 Georgia,serif;padding:0 1rem}</style>"
        "</head><body>\n" + "\n".join(body) + "\n</body></html>\n"
    )


def _add_runs(paragraph, text: str) -> None:
    """Bold and italic Markdown marks become real formatting; other marks stay as written."""
    for token in re.split(r"(\*\*[^*]+\*\*|\*[^*]+\*)", text):
        if token.startswith("**") and token.endswith("**") and len(token) > 4:
            paragraph.add_run(token[2:-2]).bold = True
        elif token.startswith("*") and token.endswith("*") and len(token) > 2:
            paragraph.add_run(token[1:-1]).italic = True
        elif token:
            paragraph.add_run(token)


def document_docx(document: Document) -> bytes:
    from docx import Document as DocxDocument

    docx = DocxDocument()
    docx.core_properties.title = document.title
    docx.add_heading(document.title, level=0)
    for section, depth, _ in document.section_tree():
        docx.add_heading(section.heading, level=min(depth + 1, 9))
        for block in re.split(r"\n\s*\n", section.text.strip()):
            if not block.strip():
                continue
            lines = block.splitlines()
            if all(re.match(r"\s*[-*] ", line) for line in lines):
                for line in lines:
                    _add_runs(docx.add_paragraph(style="List Bullet"), re.sub(r"^\s*[-*] ", "", line))
            else:
                _add_runs(docx.add_paragraph(), " ".join(line.strip() for line in lines))
    buffer = io.BytesIO()
    docx.save(buffer)
    return buffer.getvalue()
