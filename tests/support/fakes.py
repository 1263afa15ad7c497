"""A scripted engine, for fast checks of how roles read answers and drive the engine. Every role
is also run through the real transformers backend (tiny model in tests, bundled model in the
benchmarks); this never stands in for that."""

from __future__ import annotations

import threading

from agents.llm.types import Delta, GenerationRequest, sentence_cut


class ScriptedEngine:
    """Answers each request with the next scripted text, and keeps the requests and batches.
    A batch of requests that ask for `sentences` (a writer's sentence search) is answered a
    sentence at a time from the next scripted text, the same sentence for every candidate of the
    batch, so a script reads as the text the model would write; when the script is spent, the
    model ends its text."""

    def __init__(self, *answers: str):
        self.answers = list(answers)
        self.requests: list[GenerationRequest] = []
        self.batches: list[list[GenerationRequest]] = []
        self._lock = threading.Lock()  # a writer's sections step on threads of their own

    def stream(self, requests, cancel=None):
        batch = list(requests)
        with self._lock:
            self.batches.append(batch)
            self.requests += batch
            if batch and all(request.sentences for request in batch):
                text = self._next_sentence()
                answers = [text] * len(batch)
            else:
                answers = [self.answers.pop(0) for _ in batch]
        for request, answer in zip(batch, answers, strict=True):
            yield Delta(request.id, answer, finished=True, finish_reason="stop", completion_tokens=len(answer.split()),
                        logprob=-0.5 * len(answer.split()) if request.logprobs else None)

    def _next_sentence(self) -> str:
        while self.answers and not self.answers[0].strip():
            self.answers.pop(0)
        if not self.answers:
            return ""
        head = self.answers[0]
        cut = sentence_cut(head, 1)
        if cut is None:
            self.answers.pop(0)
            return head
        self.answers[0] = head[cut:]
        return head[:cut]
