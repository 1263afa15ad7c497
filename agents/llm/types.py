"""What goes into the engine and what comes out, shared by every backend."""

from __future__ import annotations

import queue
import re
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Protocol


@dataclass(frozen=True)
class AdapterSpec:
    """A LoRA adapter on disk. `name` identifies it in a batch (e.g. "writer@3"); `sha256` and
    `base_model`, when given, are checked before it is loaded."""

    name: str
    path: str
    sha256: str = ""
    base_model: str = ""
    # Why the files could not be had on this machine (a failed download): the requests that use
    # this adapter fail with it, the rest of the batch runs on.
    problem: str = ""

    @property
    def key(self) -> str:
        """What the engine holds these weights under: the name and what it names (its checksum,
        else its folder), so a name loaded again from other files is other weights, never the
        old ones (nor their cached prefixes)."""
        return f"{self.name}#{self.sha256[:16] or self.path}"


@dataclass
class GenerationRequest:
    """One completion. Give `messages` (chat, formatted with the model's chat template) or a raw
    `prompt`. `assistant_prefix` is text the answer already starts with (to continue a draft).
    temperature 0 means greedy decoding; `seed` makes sampling repeatable; a repetition_penalty
    above 1 makes tokens already in the answer less likely (small models loop without it)."""

    id: str
    messages: list[dict[str, str]] | None = None
    prompt: str | None = None
    adapter: AdapterSpec | None = None
    max_new_tokens: int = 256
    temperature: float = 0.0
    top_p: float = 1.0
    seed: int = 0
    stop: tuple[str, ...] = ()
    assistant_prefix: str = ""
    repetition_penalty: float = 1.0
    min_new_tokens: int = 0  # the end token is not allowed before this many tokens
    # Scheduling on a shared serving core: higher priority is admitted first (INTERACTIVE for a
    # person waiting on one answer, BULK for section writing); rows are shared fairly between
    # groups (a writing run, an HTTP client).
    priority: int = 0
    group: str = ""
    # Guided decoding (guided.py): an OpenAI-style response_format; the row can only write what
    # its schema or grammar accepts.
    response_format: dict | None = None
    # Keep requests from repeating each other: with block_ngrams n > 0, a token that would
    # complete an n-gram another request of the same `ngram_pool` wrote (or one in `avoid`, text
    # written before) is not chosen. Section writers of one run share a pool.
    block_ngrams: int = 0
    ngram_pool: str = ""
    avoid: tuple[str, ...] = ()
    # Stay close to sources: with ground_bias b > 0, a token that continues a phrase of one of
    # the `ground` texts (it follows the row's last GROUND_CONTEXT tokens somewhere in them) gets
    # b added to its logit. A writer's notes on a source passage use it (section_notes.write_notes),
    # so they keep to what the passage says (and can cite it).
    ground: tuple[str, ...] = ()
    ground_bias: float = 0.0
    # Keep a row from repeating itself: with no_repeat_ngrams n > 0, a token that would complete a
    # token n-gram this row already holds (its assistant_prefix included) is not chosen, as
    # transformers' no_repeat_ngram_size does for one sequence. The pool above only stops rows
    # repeating each other: a writer once streamed the same sentence 97 times.
    no_repeat_ngrams: int = 0
    # Stop after this many whole sentences (a sentence end followed by a space or a line break);
    # the text ends with the last sentence's punctuation. A writer's sentence search asks one.
    sentences: int = 0
    # Report the summed log-probability of the tokens written (the model's own distribution,
    # before penalties and masks) on the last delta: how likely the model found its answer.
    logprobs: bool = False


BULK, INTERACTIVE = 0, 1


# A sentence ends at . ! or ? (and closing quotes or brackets) before a space, or at a blank line.
SENTENCE_END = re.compile(r"[.!?][\"'”’)\]]*(?=\s)|(?<=\S)(?=\n\s*\n)")


def sentence_cut(text: str, count: int) -> int | None:
    """Where `text` ends after its `count`-th whole sentence, or None while it has fewer. A
    sentence holds two words at least: a list's "1." or a lone "Dr." ends none."""
    found, start = 0, 0
    for match in SENTENCE_END.finditer(text):
        if len(re.findall(r"[^\W\d_]{2,}", text[start:match.end()])) < 2:
            continue
        found, start = found + 1, match.end()
        if found >= count:
            return match.end()
    return None



@dataclass
class Delta:
    """New text for one request. The last delta of a request has finished=True and a reason:
    "stop" (end token or stop string), "length" (max_new_tokens), "cancelled" or "error"."""

    request_id: str
    text: str = ""
    finished: bool = False
    finish_reason: str | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    error: str = ""
    timings: dict[str, float] = field(default_factory=dict)
    logprob: float | None = None  # on the last delta of a request that asked for logprobs


# Given the ids still running, returns those that should stop now.
CancelCheck = Callable[[list[str]], set[str]]


class Engine(Protocol):
    def stream(self, requests: Iterable[GenerationRequest],
               cancel: CancelCheck | None = None) -> Iterator[Delta]: ...


def relay(out: queue.Queue, request_ids: list[str], cancel: CancelCheck | None, stop: Callable[[str], None],
          poll_s: float = 0.1) -> Iterator[Delta]:
    """Yield the deltas that arrive on `out` until every request has finished. `cancel` is asked
    from this (the consumer's) thread at most every `poll_s`, and `stop` is called for each id it
    names; if the consumer stops listening, whatever still runs is stopped too."""
    active, last_poll = set(request_ids), 0.0
    try:
        while active:
            try:
                delta = out.get(timeout=max(0.01, poll_s))
            except queue.Empty:
                delta = None
            if delta is not None:
                if delta.finished:
                    active.discard(delta.request_id)
                yield delta
            now = time.monotonic()
            if cancel is not None and active and now - last_poll >= poll_s:
                last_poll = now
                for request_id in cancel([r for r in request_ids if r in active]):
                    stop(request_id)
    finally:
        for request_id in active:
            stop(request_id)
