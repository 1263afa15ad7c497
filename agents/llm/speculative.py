"""Speculative decoding for a lone greedy request: a smaller draft model with the same tokenizer
(a distilled student) proposes a few tokens one by one, cheaply; the served model then checks
them all in one forward pass (the serving core does that part) and keeps the longest run that
matches its own greedy choices, plus its own next token. The text is exactly what the served
model alone would write; only the number of its forward passes drops, by the share accepted."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from agents.llm.sampling import RequestState, Sampler


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
