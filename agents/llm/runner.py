"""The model runner of the serving core: builds the tensors of one forward pass and calls the
model, nothing else. Which rows run is the scheduler's business (serving.py); turning logits
into text is sampling.py's. Three kinds of pass: a prefill chunk of one row, a decode step of
the decoding rows (one token each), and a verification pass (a row's pending token and a draft
model's proposals)."""

from __future__ import annotations

import torch

from agents.llm.adapters import AdapterManager
from agents.llm.kv_cache import SlotKVCache
from agents.llm.loading import LoadedModel


class ModelRunner:
    def __init__(self, model: LoadedModel, kv: SlotKVCache, adapters: AdapterManager):
        self.model, self.kv, self.adapters, self.device = model, kv, adapters, model.device

    def _forward(self, input_ids: torch.Tensor, positions: torch.Tensor, mask: torch.Tensor, keep: int):
        # Only the last `keep` positions' logits: the full [rows, length, vocab] tensor of a
        # prefill would cost as much as the rest of the model.
        if self.model.step is not None:
            return self.model.step.forward(input_ids, positions, mask, self.kv, keep)
        return self.model.model(input_ids=input_ids, position_ids=positions, attention_mask=mask,
                                 past_key_values=self.kv, use_cache=True, logits_to_keep=keep).logits

    def prefill(self, slot: int, adapter: str | None, tokens: list[int], start: int) -> torch.Tensor:
        """Tokens at positions start.. of one row; the logits after the last one."""
        self.adapters.arrange((adapter,))
        mask = self.kv.plan_prefill(slot, start, len(tokens))
        positions = torch.arange(start, start + len(tokens), device=self.device)[None]
        return self._forward(torch.tensor([tokens], device=self.device), positions, mask, 1)[0, -1]

    def decode(self, adapters: tuple[str | None, ...], tokens: list[int], lengths: list[int]) -> torch.Tensor:
        """One token for each of rows 0..n-1, row r at position lengths[r]; [n, vocab] logits."""
        self.adapters.arrange(adapters)
        at = torch.tensor(lengths, device=self.device)
        mask = self.kv.plan_decode(at)
        return self._forward(torch.tensor(tokens, device=self.device)[:, None], at[:, None], mask, 1)[:, -1]

    def verify(self, slot: int, adapter: str | None, tokens: list[int], start: int) -> torch.Tensor:
        """Logits after each of `tokens` (a pending token and proposals), in one pass."""
        self.adapters.arrange((adapter,))
        mask = self.kv.plan_prefill(slot, start, len(tokens))
        positions = torch.arange(start, start + len(tokens), device=self.device)[None]
        return self._forward(torch.tensor([tokens], device=self.device), positions, mask, len(tokens))[0]
