"""What goes into the engine and what comes out, shared by every backend."""

from __future__ import annotations

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


BULK, INTERACTIVE = 0, 1


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


# Given the ids still running, returns those that should stop now.
CancelCheck = Callable[[list[str]], set[str]]


class Engine(Protocol):
    def stream(self, requests: Iterable[GenerationRequest],
               cancel: CancelCheck | None = None) -> Iterator[Delta]: ...
