"""Talk about the writing, or to the reader, found by meaning rather than by phrase: a logistic
regression over MiniLM sentence embeddings, trained on a labelled set
(training/data/labelled/meta_sentences.json) at first use, beside quality.py's phrase rules.

The set is split once: every sentence of the held-out topic groups, and about 30% of the rest
chosen by a hash of its text, are never trained on; bench/calibrate.py reports precision and
recall there. `manage.py evaluate` counts meta sentences with the classifier at THRESHOLD; the
writers' filter refuses only what it finds at FILTER_THRESHOLD, so the measure keeps seeing what
the filter lets through."""

from __future__ import annotations

import functools
import json
import zlib
from collections.abc import Callable
from pathlib import Path

import torch

LABELLED = Path(__file__).resolve().parent.parent / "training" / "data" / "labelled" / "meta_sentences.json"
# Subject sentences of topics no training sentence is from.
HELDOUT_GROUPS = {"people", "tech", "general", "how-to-unseen"}
THRESHOLD = 0.5  # what evaluate counts as meta
FILTER_THRESHOLD = 0.8  # what the writers' filter refuses (stricter: a good sentence refused costs a search step)


def split(items: list[dict]) -> tuple[list[dict], list[dict]]:
    """(train, held out), fixed by the items' groups and texts."""
    train: list[dict] = []
    heldout: list[dict] = []
    for item in items:
        unseen = item["group"] in HELDOUT_GROUPS or zlib.crc32(item["text"].encode()) % 10 < 3
        (heldout if unseen else train).append(item)
    return train, heldout


class Chatter:
    """P(meta) for sentences: `probability(sentences)`; `__call__(sentence)` at `threshold`."""

    def __init__(self, embed: Callable, weight: torch.Tensor, bias: torch.Tensor, threshold: float = THRESHOLD):
        self.embed, self.weight, self.bias, self.threshold = embed, weight, bias, threshold

    @classmethod
    def train(cls, embed: Callable, items: list[dict], steps: int = 400, l2: float = 1e-3) -> Chatter:
        x = embed([item["text"] for item in items]).float()
        y = torch.tensor([float(item["meta"]) for item in items])
        weight = torch.zeros(x.shape[1], requires_grad=True)
        bias = torch.zeros(1, requires_grad=True)
        optimiser = torch.optim.Adam([weight, bias], lr=0.1)
        for _ in range(steps):
            optimiser.zero_grad()
            fit = torch.nn.functional.binary_cross_entropy_with_logits(x @ weight + bias, y)
            loss = fit + l2 * weight.square().sum()
            loss.backward()
            optimiser.step()
        return cls(embed, weight.detach(), bias.detach())

    def probability(self, sentences: list[str]) -> torch.Tensor:
        if not sentences:
            return torch.zeros(0)
        return torch.sigmoid(self.embed(sentences).float() @ self.weight + self.bias)

    def __call__(self, sentence: str, threshold: float | None = None) -> bool:
        return float(self.probability([sentence])[0]) >= (self.threshold if threshold is None else threshold)


@functools.cache
def default_chatter() -> Chatter:
    """Trained once per process on the labelled set's training split (about a second)."""
    from agents.retrieval import default_embedder

    train, _ = split(json.loads(LABELLED.read_text()))
    return Chatter.train(default_embedder().embed, train)
