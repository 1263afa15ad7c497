"""Plain text out of uploaded sources (text, Markdown, PDF, HTML), split into chunks for retrieval."""

from __future__ import annotations

import io
import re
import signal
import threading
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
        pages = [_page_text(page, number) for number, page in enumerate(reader.pages, start=1)]
    except (PdfReadError, ValueError, KeyError, TypeError) as error:
        raise ExtractionError(f"The PDF could not be read ({error}).") from error
    return "\n\n".join(pages)


class _SlowPage(Exception):
    pass


def _page_text(page, number: int) -> str:
    """One page's text within PAGE_SECONDS (a damaged page is refused then, not after the whole
    file's limit). Timed by an alarm where this runs on a process's main thread, as it does in
    the reader's child process."""
    if threading.current_thread() is not threading.main_thread():
        return page.extract_text() or ""

    def slow(_signum, _frame):
        raise _SlowPage

    previous = signal.signal(signal.SIGALRM, slow)
    signal.setitimer(signal.ITIMER_REAL, PAGE_SECONDS)
    try:
        return page.extract_text() or ""
    except _SlowPage:
        raise ExtractionError(f"Page {number} of the PDF could not be read in {PAGE_SECONDS:g} s; the file may be "
                              "damaged or built to be slow. Try exporting it again, or as text.") from None
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def _pdf_structure(data: bytes) -> str:
    """The cheap first pass over a PDF: its header, cross-reference table and page tree (the
    page count), without reading any page's content."""
    from pypdf import PdfReader
    from pypdf.errors import PdfReadError

    if b"%PDF-" not in data[:1024]:
        raise ExtractionError("This is not a PDF (it has no PDF header); upload the original file.")
    try:
        reader = PdfReader(io.BytesIO(data))
        if reader.is_encrypted:
            raise ExtractionError("The PDF is encrypted; upload an unprotected copy.")
        pages = len(reader.pages)
    except (PdfReadError, ValueError, KeyError, TypeError, AttributeError) as error:
        raise ExtractionError(f"The PDF's structure is damaged ({error}).") from error
    if pages == 0:
        raise ExtractionError("The PDF has no pages.")
    return str(pages)


def normalise(text: str) -> str:
    text = text.replace("\r\n", "\n").replace("\r", "\n").replace("\x00", "")
    text = re.sub(r"[ \t\f\v]+", " ", text)
    text = re.sub(r" *\n *", "\n", text)
    text = re.sub(r"\n{3,}", "\n\n", text)
    return text.strip()


# Limits of the child process that reads an upload (a deflate bomb, deeply nested PDF objects and
# slow pathological files were found to hang or exhaust a worker when read in it).
LIMIT_SECONDS = 60
STRUCTURE_SECONDS = 10  # a PDF's first pass: a malformed one is refused in seconds, not after 60
PAGE_SECONDS = 10.0  # one page's text
LIMIT_MEMORY_BYTES = 1 << 30
PDF_STRUCTURE = "pdf-structure"
EXIT_REFUSED, EXIT_FAILED = 2, 3


def extract_text_isolated(data: bytes, kind: str, seconds: float = LIMIT_SECONDS,
                          memory: int = LIMIT_MEMORY_BYTES) -> str:
    """`extract_text` in a child process with a time, CPU and memory limit: whatever the file
    does, this returns its text or raises ExtractionError saying why. A PDF is first read for
    its structure alone (header, cross-references, page tree) within STRUCTURE_SECONDS: a
    damaged one is refused then; only a sound one is read whole, within `seconds`."""
    if kind == "pdf":
        if b"%PDF-" not in data[:1024]:
            raise ExtractionError("This is not a PDF (it has no PDF header); upload the original file.")
        _isolated(data, PDF_STRUCTURE, min(seconds, STRUCTURE_SECONDS), memory)
    return _isolated(data, kind, seconds, memory)


def _isolated(data: bytes, kind: str, seconds: float, memory: int) -> str:
    import resource
    import subprocess
    import sys

    def limits() -> None:  # in the child, before it runs
        resource.setrlimit(resource.RLIMIT_AS, (memory, memory))
        cpu = int(seconds) + 1
        resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu + 1))

    try:
        done = subprocess.run([sys.executable, "-m", "webapp.documents.extract", kind], input=data,
                              capture_output=True, timeout=seconds, preexec_fn=limits, check=False)
    except subprocess.TimeoutExpired:
        raise ExtractionError(f"Reading the file took longer than {seconds:.0f} s; it may be damaged or "
                              "built to be slow. Try exporting it again, or as text.") from None
    message = done.stderr.decode(errors="replace").strip().splitlines()
    if done.returncode == 0:
        return done.stdout.decode()
    if done.returncode == EXIT_REFUSED and message:
        raise ExtractionError(message[-1])
    if done.returncode < 0 or "MemoryError" in "".join(message[-3:]):
        raise ExtractionError("Reading the file needed more time or memory than a source may use; it may be "
                              "damaged or built to exhaust the reader.")
    raise ExtractionError(f"The file could not be read ({message[-1] if message else 'the reader failed'}).")


def extract_text(data: bytes, kind: str) -> str:
    if kind == PDF_STRUCTURE:
        return _pdf_structure(data)
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


if __name__ == "__main__":  # the child of extract_text_isolated: the file on stdin, its text on stdout
    import sys

    try:
        sys.stdout.write(extract_text(sys.stdin.buffer.read(), sys.argv[1]))
    except ExtractionError as error:
        print(str(error), file=sys.stderr)
        sys.exit(EXIT_REFUSED)
    except RecursionError:
        print("RecursionError: the file is nested too deeply", file=sys.stderr)
        sys.exit(EXIT_FAILED)
