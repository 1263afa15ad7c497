"""One request inside the serving core: its place in the queue or its row (and KV slot), and its
decoding state. The core (serving.py) moves it between the two; scheduler.py orders the queue."""

from __future__ import annotations

import dataclasses
import queue
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

from agents.llm.sampling import NgramPools, RequestState, check_sampling, new_state
from agents.llm.types import GenerationRequest

if TYPE_CHECKING:
    from agents.llm.loading import LoadedModel
    from agents.llm.speculative import DraftState


@dataclass(eq=False)
class Sequence:
    """One request inside the core: its place in the queue or its row, and its decoding state."""

    state: RequestState
    ids: list[int]  # the prompt's token ids
    out: queue.Queue
    reserve: int  # KV positions it may need, prompt included
    submitted: float
    admitted_at: int = -1
    length: int = 0  # positions of this row held in the KV buffer
    pending: int | None = None  # the last sampled token, not yet fed to the model
    looked_up: bool = False  # the prefix cache was asked for this row's prompt
    swapped: tuple | None = None  # (keys, values) of a preempted row, kept in host memory
    draft: DraftState | None = None  # speculative decoding: the draft model's cache

    @property
    def next_input(self) -> int:
        """The token a decoding row feeds the model next (every decoding row has one)."""
        assert self.pending is not None, "a decoding row always has its next token"
        return self.pending

    @property
    def request(self) -> GenerationRequest:
        return self.state.request

    @property
    def priority(self) -> int:
        return self.request.priority

    @property
    def group(self) -> str:
        return self.request.group

    @property
    def adapter(self) -> str | None:
        return self.request.adapter.key if self.request.adapter else None

    def feed(self) -> list[int]:
        """What the KV buffer must hold before decoding: the prompt, and on a resumed row all its
        tokens but the pending one."""
        return self.ids + self.state.tokens[:-1] if self.state.tokens else self.ids


def new_sequence(model: LoadedModel, request: GenerationRequest, out: queue.Queue, *, max_positions: int,
                 kv_budget: int, spare: int, pools: NgramPools) -> Sequence:
    """The request as the core keeps it: its prompt's ids and what it may reserve. A request asking
    more tokens than the context has left stops at its end (as "length"); ValueError for a prompt
    the context cannot hold, or a request the KV budget cannot."""
    started = time.monotonic()
    check_sampling(request)
    ids = model.prompt_ids(request)
    room = max_positions - len(ids)
    if room < 1:
        raise ValueError(f"the prompt has {len(ids)} tokens; this model's context is {max_positions}")
    if request.max_new_tokens > room:
        request = dataclasses.replace(request, max_new_tokens=room)
    reserve = len(ids) + request.max_new_tokens + spare
    if reserve > kv_budget:
        raise ValueError(f"the request needs {reserve} KV positions (prompt and max_new_tokens); "
                         f"this server's KV budget is {kv_budget}")
    state = new_state(request, len(ids), model.tokenizer, started, model.eos_ids, pools)
    return Sequence(state, ids, out, reserve, started)
