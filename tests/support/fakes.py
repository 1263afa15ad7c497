"""A scripted engine, for fast checks of how roles read answers and drive the engine. Every role
is also run through the real transformers backend (tiny model in tests, bundled model in the
benchmarks); this never stands in for that."""

from __future__ import annotations

from agents.llm.types import Delta, GenerationRequest


class ScriptedEngine:
    """Answers each request with the next scripted text, and keeps the requests and batches."""

    def __init__(self, *answers: str):
        self.answers = list(answers)
        self.requests: list[GenerationRequest] = []
        self.batches: list[list[GenerationRequest]] = []

    def stream(self, requests, cancel=None):
        batch = list(requests)
        self.batches.append(batch)
        for request in batch:
            self.requests.append(request)
            yield Delta(request.id, self.answers.pop(0), finished=True, finish_reason="stop")
