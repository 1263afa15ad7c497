"""Speculative decoding for a lone greedy request: a smaller draft model with the same tokenizer
(a distilled student) proposes a few tokens one by one, cheaply; the served model then checks
them all in one forward pass (step(), the serving core's row 0) and keeps the longest run that
matches its own greedy choices, plus its own next token. The text is exactly what the served
model alone would write; only the number of its forward passes drops, by the share accepted."""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch

from agents.llm.sampling import RequestState, Sampler
from agents.llm.types import Delta

if TYPE_CHECKING:
    from agents.llm.loading import LoadedModel
    from agents.llm.metrics import CoreStats
    from agents.llm.runner import ModelRunner
    from agents.llm.sequence import Sequence


@dataclass
class DraftState:
    """The draft model's cache for one request, and how many leading tokens of it that holds."""

    cache: Any  # transformers' DynamicCache
    drafted: int = 0


def new_draft_state(draft_model) -> DraftState:
    from transformers import DynamicCache

    return DraftState(DynamicCache(config=draft_model.config))


def propose(draft_model, sampler: Sampler, state: RequestState, sequence_ids: list[int], draft: DraftState,
            k: int, device: str) -> list[int]:
    """k greedy proposals, with the request's repetition penalty and min tokens."""
    guess = RequestState(state.request, 0, None, state.started, tokens=list(state.tokens), seen=set(state.seen))
    proposals, feed = [], sequence_ids[draft.drafted:]
    for _ in range(k):
        logits = draft_model(input_ids=torch.tensor([feed], device=device), past_key_values=draft.cache,
                             use_cache=True, logits_to_keep=1).logits[0, -1]
        token = sampler.pick(logits, guess)
        guess.tokens.append(token)
        if state.request.repetition_penalty != 1.0:
            guess.seen.add(token)
        proposals.append(token)
        feed = [token]
    return proposals


def forget_rejected(draft: DraftState, before: int, kept: int, k: int) -> None:
    """The draft saw all its proposals but the last: keep the prefix that was accepted."""
    draft.drafted = before + min(kept, k - 1)
    extra = draft.cache.get_seq_length() - draft.drafted
    if extra > 0:
        draft.cache.crop(-extra)


def step(model: LoadedModel, runner: ModelRunner, sampler: Sampler, sequence: Sequence,
         stats: CoreStats) -> Iterator[Delta]:
    """One verification pass over the draft's proposals for the core's lone row (in KV slot 0):
    the deltas of the tokens kept, in order; after one that finishes the request, nothing more."""
    k, state = model.draft_tokens, sequence.state
    sequence_ids = sequence.ids + state.tokens  # the KV buffer holds all but the last (pending)
    if sequence.draft is None:
        sequence.draft = new_draft_state(model.draft)
    proposals = propose(model.draft, sampler, state, sequence_ids, sequence.draft, k, model.device)
    # This model scores its pending token and every proposal in one pass: scores[0] follows
    # the pending token, scores[i] follows proposals[i - 1].
    start = sequence.length
    scores = runner.verify(0, sequence.adapter, [sequence.next_input] + proposals, start)
    before, kept = len(sequence_ids), 0
    stats.steps += 1
    for position in range(k + 1):
        token = sampler.pick(scores[position], state)
        delta = sampler.advance(state, token)
        stats.generated_tokens += 1
        if delta is not None:
            yield delta
            if delta.finished:
                return
        sequence_ids.append(token)
        if position == k:
            break
        state.proposed += 1
        if token != proposals[position]:
            break
        kept += 1
        state.accepted += 1
    stats.recent.append((time.monotonic(), kept + 1))
    # The buffer keeps the pending token and the accepted proposals (positions past a row's
    # length are never attended); the draft forgets what was rejected.
    sequence.length = start + 1 + kept
    sequence.pending = sequence_ids[-1]
    forget_rejected(sequence.draft, before, kept, k)
