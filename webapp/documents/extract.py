"""Plain text out of uploaded sources (text, Markdown, PDF, HTML), split into chunks for retrieval."""

from __future__ import annotations

import io
import re
from dataclasses import dataclass
from html.parser import HTMLParser


class ExtractionError(Exception):
    """The file could not be read; the message says why in words a user understands."""


def _decode(data: bytes) -> str:
    if data.startswith((b"\xff\xfe", b"\xfe\xff")):
        return data.decode("utf-16")
    if b"\x00" in data[:8192]:
        raise ExtractionError("The file looks binary, not text. Is the extension right?")
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError:
        return data.decode("cp1252", errors="replace")


class _HTMLText(HTMLParser):
    """Collects visible text, with paragraph breaks at block elements."""

    BLOCKS = {"p", "div", "section", "article", "br", "li", "tr", "h1", "h2", "h3", "h4", "h5",
              "h6", "blockquote", "pre", "header", "footer", "table", "ul", "ol"}
    HIDDEN = {"script", "style", "noscript", "template", "head"}

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self.hidden = 0

    def handle_starttag(self, tag: str, attrs) -> None:
        if tag in self.HIDDEN:
            self.hidden += 1
        elif tag in self.BLOCKS:
            self.parts.append("\n\n")

    def handle_endtag(self, tag: str) -> None:
        if tag in self.HIDDEN:
            self.hidden = max(0, self.hidden - 1)
        elif tag in self.BLOCKS:
            self.parts.append("\n\n")

    def handle_data(self, data: str) -> None:
        if not self.hidden:
            self.parts.append(data)


def _pdf_text(data: bytes) -> str:
    from pypdf import PdfReader
    from pypdf.errors import PdfReadError

    try:
        reader = PdfReader(io.BytesIO(data))
        if reader.is_encrypted:
            raise ExtractionError("The PDF is encrypted; upload an unprotected copy.")
        pages = [page.extract_text() or "" for page in reader.pages]
    except (PdfReadError, ValueError, KeyError, TypeError) as error:
        raise ExtractionError(f"The PDF could not be read ({error}).") from error
    return "\n\n".join(pages)


def normalise(text: str) -> str:
    text = text.replace("\r\n", "\n").replace("\r", "\n").replace("\x00", "")
    text = re.sub(r"[ \t\f\v]+", " ", text)
    text = re.sub(r" *\n *", "\n", text)
    text = re.sub(r"\n{3,}", "\n\n", text)
    return text.strip()


def extract_text(data: bytes, kind: str) -> str:
    if kind == "pdf":
        text = _pdf_text(data)
    elif kind == "html":
        parser = _HTMLText()
        parser.feed(_decode(data))
        parser.close()
        text = "".join(parser.parts)
    elif kind in ("text", "markdown"):
        text = _decode(data)
    else:
        raise ExtractionError(f"Unknown source type {kind!r}.")
    text = normalise(text)
    if not text:
        raise ExtractionError(
            "No text found in the file." + (" A scanned PDF needs OCR first." if kind == "pdf" else "")
        )
    return text


@dataclass
class Chunk:
    start: int
    end: int
    text: str


def chunk_text(text: str, size: int = 1200, overlap: int = 200) -> list[Chunk]:
    """Split text into pieces of about `size` characters that end at a paragraph or sentence
    boundary where one is near, each starting `overlap` characters before the previous end."""
    chunks: list[Chunk] = []
    start = 0
    while start < len(text):
        end = min(len(text), start + size)
        if end < len(text):
            window = text[start + size // 2:end]
            for pattern in ("\n\n", ". ", "? ", "! ", "\n", " "):
                cut = window.rfind(pattern)
                if cut != -1:
                    end = start + size // 2 + cut + len(pattern)
                    break
        piece = text[start:end].strip()
        if piece:
            chunks.append(Chunk(start, end, piece))
        if end >= len(text):
            break
        start = max(end - overlap, start + 1)
        # Begin the overlap at a word boundary.
        space = text.find(" ", start, end)
        if space != -1:
            start = space + 1
    return chunks
