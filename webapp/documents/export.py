"""A document written out as Markdown, HTML or DOCX, with headings nested as the section tree."""

from __future__ import annotations

import io
import re

import nh3
from django.http import Http404, HttpResponse
from django.urls import reverse
from django.utils.html import escape
from django.utils.text import slugify
from markdown_it import MarkdownIt

from webapp.documents.models import Document, Section, SourceChunk

# Tags that section text (Markdown) may turn into; anything else is stripped from the HTML.
ALLOWED_TAGS = {"p", "br", "em", "strong", "code", "pre", "blockquote", "ul", "ol", "li", "a",
                "h3", "h4", "h5", "h6", "hr", "table", "thead", "tbody", "tr", "th", "td", "sup", "sub"}


def _heading_level(depth: int) -> int:
    # The title is level 1; top-level sections are level 2, and so on down to 6.
    return min(depth + 2, 6)


# CommonMark with tables, by markdown-it-py: linear time on any input (20k "[" or "![" took the
# old renderer over 20 s), blocks nested at most MAX_NESTING deep (deeper is text, not a crash).
# Raw HTML in the text is text: "<<Alexandria>>", "a <b> c" or a pasted "<script>" are shown as
# written, escaped, instead of being passed on as tags (which the sanitiser would then drop,
# taking their text with them).
MAX_NESTING = 20
_MARKDOWN = MarkdownIt("commonmark", {"html": False, "maxNesting": MAX_NESTING}).enable("table")


def render_markdown_safe(text: str) -> str:
    """User or model text (Markdown) to HTML that is safe to put on a page and loses no text."""
    tokens = _MARKDOWN.parse(text)
    if max((token.level for token in tokens), default=0) >= MAX_NESTING - 1:
        # Nested deeper than the parser goes (it would drop the rest): shown as written instead.
        html = "".join(f"<p>{escape(part).replace(chr(10), '<br>')}</p>" for part in text.split("\n\n"))
    else:
        html = _MARKDOWN.renderer.render(tokens, _MARKDOWN.options, {})
    return nh3.clean(html, tags=ALLOWED_TAGS, attributes={"a": {"href", "title"}},
                     url_schemes={"http", "https", "mailto"})


CITATION = re.compile(r"\[(\d{1,2})\]")


class References:
    """The sources a document cites. A writer sees its passages as [1], [2], ... (the chunk ids
    are kept on the section, in that order); the document numbers the passages it cites in the
    order they are first cited, so [n] means the same passage everywhere in the article. A
    number a section has no passage for stays as written."""

    def __init__(self, sections: list[Section]):
        ids = {chunk_id for section in sections for chunk_id in section.citations}
        self.chunks = {c.pk: c for c in SourceChunk.objects.filter(pk__in=ids).select_related("source")}
        self.numbers: dict[int, int] = {}
        self.texts = {section.pk: self._renumber(section) for section in sections}

    def _renumber(self, section: Section) -> str:
        def number(match: re.Match) -> str:
            index = int(match.group(1)) - 1
            chunk_id = section.citations[index] if 0 <= index < len(section.citations) else None
            if chunk_id not in self.chunks:
                return match.group(0)
            return f"[{self.numbers.setdefault(chunk_id, len(self.numbers) + 1)}]"

        return CITATION.sub(number, section.text)

    def listing(self) -> list[tuple[int, SourceChunk]]:
        return [(number, self.chunks[chunk_id]) for chunk_id, number in self.numbers.items()]

    def linked(self, section: Section) -> str:
        """The section's Markdown with each citation a link to its passage on the source's page."""
        by_number = dict(self.listing())

        def link(match: re.Match) -> str:
            chunk = by_number.get(int(match.group(1)))
            if chunk is None:
                return match.group(0)
            url = reverse("source_detail", args=[chunk.source.project_id, chunk.source_id]) + f"#chunk-{chunk.index}"
            title = re.sub(r"[\"\[\]()]", "", chunk.source.title)
            return f"[\\[{match.group(1)}\\]]({url} \"{title}, passage {chunk.index + 1}\")"

        return CITATION.sub(link, self.texts[section.pk])


# A review copy marks sentences people should check: section id -> [(sentence, why)], in order.
Checks = dict[int, list[tuple[str, str]]]
CHECK_MARK = "**[check this]**"


def _text(references: References, section: Section, checks: Checks | None) -> str:
    """The section's Markdown, in a review copy with each sentence to check followed by a mark."""
    text = references.texts[section.pk]
    for sentence, _why in (checks or {}).get(section.pk, []):
        where = text.find(sentence)
        if where >= 0:
            end = where + len(sentence)
            text = f"{text[:end]} {CHECK_MARK}{text[end:]}"
    return text


def _to_check(tree: list, checks: Checks | None) -> list[str]:
    """The review copy's closing list: each sentence to check, its section and why."""
    return [f"{section.heading}: “{sentence}” {why}" for section, _, _ in tree
            for sentence, why in (checks or {}).get(section.pk, [])]


def _source_line(chunk: SourceChunk) -> str:
    return f"{chunk.source.title}, passage {chunk.index + 1}: “{' '.join(chunk.text.split()[:24])}…”"


def document_markdown(document: Document, checks: Checks | None = None) -> str:
    """The article; with `checks`, its review copy (sentences to check marked, and listed)."""
    tree = list(document.section_tree())
    references = References([section for section, _, _ in tree])
    parts = [f"# {document.title}\n"]
    if document.lead.strip():
        parts.append(f"*{document.lead.strip()}*\n")
    for section, depth, _ in tree:
        parts.append(f"{'#' * _heading_level(depth)} {section.heading}\n")
        if section.text.strip():
            parts.append(_text(references, section, checks).strip() + "\n")
    if to_check := _to_check(tree, checks):
        parts.append("## To check\n")
        parts.append("\n".join(f"- {line}" for line in to_check) + "\n")
    if references.numbers:
        parts.append("## Sources\n")
        parts.append("\n".join(f"{number}. {_source_line(chunk)}" for number, chunk in references.listing()) + "\n")
    return "\n".join(parts)


def document_html(document: Document, checks: Checks | None = None) -> str:
    tree = list(document.section_tree())
    references = References([section for section, _, _ in tree])
    body = [f"<h1>{escape(document.title)}</h1>"]
    if document.lead.strip():
        body.append(f"<p class=\"lead\"><em>{escape(document.lead.strip())}</em></p>")
    for section, depth, _ in tree:
        level = _heading_level(depth)
        body.append(f"<h{level}>{escape(section.heading)}</h{level}>")
        if section.text.strip():
            body.append(render_markdown_safe(_text(references, section, checks)))
    if to_check := _to_check(tree, checks):
        body.append("<h2>To check</h2><ul>" + "".join(f"<li>{escape(line)}</li>" for line in to_check) + "</ul>")
    if references.numbers:
        body.append("<h2>Sources</h2><ol>" + "".join(f"<li value=\"{number}\">{escape(_source_line(chunk))}</li>"
                                                     for number, chunk in references.listing()) + "</ol>")
    return (
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
        "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
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


def document_docx(document: Document, checks: Checks | None = None) -> bytes:
    from docx import Document as DocxDocument

    docx = DocxDocument()
    docx.core_properties.title = document.title[:255]  # the DOCX format's limit (the heading has it all)
    docx.add_heading(document.title, level=0)
    if document.lead.strip():
        docx.add_paragraph().add_run(document.lead.strip()).italic = True
    tree = list(document.section_tree())
    references = References([section for section, _, _ in tree])
    for section, depth, _ in tree:
        docx.add_heading(section.heading, level=min(depth + 1, 9))
        for block in re.split(r"\n\s*\n", _text(references, section, checks).strip()):
            if not block.strip():
                continue
            lines = block.splitlines()
            if all(re.match(r"\s*[-*] ", line) for line in lines):
                for line in lines:
                    _add_runs(docx.add_paragraph(style="List Bullet"), re.sub(r"^\s*[-*] ", "", line))
            else:
                _add_runs(docx.add_paragraph(), " ".join(line.strip() for line in lines))
    if to_check := _to_check(tree, checks):
        docx.add_heading("To check", level=1)
        for line in to_check:
            docx.add_paragraph(line, style="List Bullet")
    if references.numbers:
        docx.add_heading("Sources", level=1)
        for number, chunk in references.listing():
            docx.add_paragraph(f"[{number}] {_source_line(chunk)}")
    buffer = io.BytesIO()
    docx.save(buffer)
    return buffer.getvalue()


FORMATS = {
    "md": ("text/markdown; charset=utf-8", document_markdown),
    "html": ("text/html; charset=utf-8", document_html),
    "docx": ("application/vnd.openxmlformats-officedocument.wordprocessingml.document", document_docx),
}


def download(document: Document, fmt: str, checks: Checks | None = None) -> HttpResponse:
    """The document as a file in `fmt`; with `checks`, its review copy (named so)."""
    if fmt not in FORMATS:
        raise Http404("Unknown export format")
    content_type, render_document = FORMATS[fmt]
    response = HttpResponse(render_document(document, checks), content_type=content_type)
    name = slugify(document.title) or "document"
    response["Content-Disposition"] = f'attachment; filename="{name}{"-review" if checks is not None else ""}.{fmt}"'
    return response
