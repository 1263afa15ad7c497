"""Citations by support: a sentence cites source passage [n] only where passage n supports it.

Support is the best cosine between the sentence's MiniLM embedding and those of the passage's own
sentences (a claim matches the sentence that states it better than a whole 600-character
passage). A citation the model wrote that points at a passage below SUPPORT is removed; a
sentence without one gets the best passage's number when it clears SUPPORT. SUPPORT is measured
on a labelled set of (sentence, passage, supported) triples, training/data/labelled/
citation_support.json, by bench/calibrate.py: the lowest threshold at which every citation it
makes on that set is right."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import TYPE_CHECKING

from agents.quality import sentences

if TYPE_CHECKING:
    import torch

SUPPORT = 0.58  # bench/calibrate.py on training/data/labelled/citation_support.json: precision 1.00, recall 0.93
SUPPORT_PRECISION = 1.0  # measured there at SUPPORT; the tests hold the threshold to it
MARK = re.compile(r"\s*\[(\d{1,2})\]")

Embed = Callable[[list[str]], "torch.Tensor"]


def plain(sentence: str) -> str:
    return MARK.sub("", sentence).strip()


class Support:
    """The passages one writer was given, numbered from 1, ready to score sentences against."""

    def __init__(self, passages: list[str], embed: Embed, threshold: float = SUPPORT):
        import torch  # here, not above: sentence_search and the web process use MARK and plain without it

        self.passages, self.embed, self.threshold = passages, embed, threshold
        pieces, owners = [], []
        for number, passage in enumerate(passages, start=1):
            for piece in sentences(passage) or [passage]:
                if len(piece.split()) >= 3:
                    pieces.append(piece)
                    owners.append(number)
        self.owners = torch.tensor(owners, dtype=torch.long)
        self.vectors = embed(pieces) if pieces else torch.empty(0, 0)

    def scores(self, sentence: str) -> dict[int, float]:
        """Passage number -> support for `sentence`."""
        if not len(self.owners) or len(plain(sentence).split()) < 4:
            return {}
        similarity = self.vectors @ self.embed([plain(sentence)])[0]
        return {number: float(similarity[self.owners == number].max()) for number in set(self.owners.tolist())}

    def cite(self, sentence: str) -> str:
        """The sentence with its unsupported citations removed and, when it has none left and a
        passage supports it, that passage's number before its final punctuation."""
        scores = self.scores(sentence)
        written = [int(n) for n in MARK.findall(sentence)]
        kept = [n for n in written if scores.get(n, 0.0) >= self.threshold]
        text = MARK.sub("", sentence).rstrip()
        if not kept and scores:
            best = max(scores, key=lambda n: scores[n])
            if scores[best] >= self.threshold:
                kept = [best]
        if not kept:
            return text
        marks = "".join(f"[{n}]" for n in dict.fromkeys(kept))
        end = re.search(r"[.!?][\"')\]]*$", text)
        return f"{text[:end.start()]} {marks}{text[end.start():]}" if end else f"{text} {marks}"

    def cite_text(self, text: str) -> str:
        paragraphs = []
        for paragraph in re.split(r"\n\s*\n", text or ""):
            cited = [self.cite(sentence) for sentence in sentences(paragraph)]
            if cited:
                paragraphs.append(" ".join(cited))
        return "\n\n".join(paragraphs)


def judge(items: list[tuple[str, str, bool]], embed: Embed) -> list[tuple[float, bool]]:
    """(support, label) for labelled (sentence, passage, supported) items."""
    return [(Support([passage], embed, 0.0).scores(sentence).get(1, 0.0), supported)
            for sentence, passage, supported in items]


def precision_recall(judged: list[tuple[float, bool]], threshold: float) -> tuple[float, float]:
    cited = [label for score, label in judged if score >= threshold]
    positives = sum(label for _, label in judged)
    precision = sum(cited) / len(cited) if cited else 1.0
    return precision, (sum(cited) / positives if positives else 0.0)
