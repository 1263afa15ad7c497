"""The baseline of bench/serving.py: how the agents worker served before the serving core, kept
only to measure against. Each `stream()` call decoded its requests as one static batch (rows
that finished left; nobody joined), with transformers' DynamicCache (concatenated every step,
copied again when a row left), and a solo worker ran one such call at a time. Sampling and
text handling are the core's own (agents/llm/sampling.py), so only batching and memory differ."""

from __future__ import annotations

import threading
from collections.abc import Iterable, Iterator

import torch

from agents.llm.sampling import Sampler, check_sampling, new_state
from agents.llm.transformers_backend import TransformersEngine
from agents.llm.types import CancelCheck, Delta, GenerationRequest


class StaticBatches:
    def __init__(self, engine: TransformersEngine):
        self.engine = engine
        self.sampler = Sampler(engine.tokenizer, engine.eos_ids)
        self.worker = threading.Lock()  # a solo pool: one task at a time

    def stream(self, requests: Iterable[GenerationRequest], cancel: CancelCheck | None = None) -> Iterator[Delta]:
        with self.worker, torch.inference_mode():
            yield from self._decode(list(requests), cancel)

    def _decode(self, batch: list[GenerationRequest], cancel: CancelCheck | None) -> Iterator[Delta]:
        from transformers import DynamicCache

        engine, device = self.engine, self.engine.device
        for request in batch:
            check_sampling(request)
            if request.adapter is not None:
                engine._ensure_adapter(request.adapter, {r.adapter.name for r in batch if r.adapter})
        prompts = [engine.prompt_ids(r) for r in batch]
        states = [new_state(r, len(p), engine.tokenizer) for r, p in zip(batch, prompts, strict=True)]
        adapters = [r.adapter.name if r.adapter else None for r in batch]
        shared = _shared_prefix(prompts)
        cache = DynamicCache(config=engine.model.config)
        if shared:  # the common prefix once per adapter, copied to the rows that use it
            distinct = list(dict.fromkeys(adapters))
            engine.adapters.lora.prepare(distinct)
            engine.model(input_ids=torch.tensor([prompts[0][:shared]] * len(distinct), device=device),
                         past_key_values=cache, use_cache=True, logits_to_keep=1)
            cache.batch_select_indices(torch.tensor([distinct.index(a) for a in adapters], device=device))
        engine.adapters.lora.prepare(adapters)
        suffixes = [p[shared:] for p in prompts]
        width = max(map(len, suffixes))
        input_ids = torch.full((len(batch), width), engine.loaded.pad_id, dtype=torch.long, device=device)
        mask = torch.zeros((len(batch), width), dtype=torch.long, device=device)
        for row, suffix in enumerate(suffixes):  # left padding
            input_ids[row, width - len(suffix):] = torch.tensor(suffix, device=device)
            mask[row, width - len(suffix):] = 1
        attention = torch.cat([torch.ones((len(batch), shared), dtype=torch.long, device=device), mask], 1)
        positions = (attention.cumsum(-1) - 1).clamp(min=0)
        logits = engine.model(input_ids=input_ids, attention_mask=attention, position_ids=positions[:, shared:],
                              past_key_values=cache, use_cache=True, logits_to_keep=1).logits[:, -1]
        last_position, active = positions[:, -1], list(range(len(batch)))
        try:
            while active:
                stop = cancel([states[i].request.id for i in active]) if cancel else set()
                keep, tokens = [], []
                for row, index in enumerate(active):
                    state = states[index]
                    if state.request.id in stop:
                        yield self.sampler.finish(state, "cancelled")
                        continue
                    token = self.sampler.pick(logits[row], state)
                    delta = self.sampler.advance(state, token)
                    if delta is not None:
                        yield delta
                    if delta is None or not delta.finished:
                        keep.append(row)
                        tokens.append(token)
                if not keep:
                    return
                if len(keep) < len(active):
                    rows = torch.tensor(keep, device=device)
                    cache.batch_select_indices(rows)
                    engine.adapters.lora.keep_rows(rows)
                    attention, last_position = attention[rows], last_position[rows]
                    active = [active[r] for r in keep]
                attention = torch.cat([attention, torch.ones((len(active), 1), dtype=torch.long, device=device)], 1)
                last_position = last_position + 1
                logits = engine.model(input_ids=torch.tensor(tokens, device=device)[:, None], attention_mask=attention,
                                      position_ids=last_position[:, None], past_key_values=cache, use_cache=True,
                                      logits_to_keep=1).logits[:, -1]
        finally:
            engine.adapters.lora.clear()


def _shared_prefix(prompts: list[list[int]], minimum: int = 16) -> int:
    if len(prompts) < 2:
        return 0
    first, length = prompts[0], min(map(len, prompts)) - 1
    for other in prompts[1:]:
        same = 0
        while same < length and other[same] == first[same]:
            same += 1
        length = same
    return length if length >= minimum else 0
