"""The serving core's model steps: a prefill chunk of one row, a decode step of the decoding
rows, a speculative verification of a lone greedy row, and what each does with the logits (the
first token, the prompt kept in the prefix cache, a finished row removed). Which rows run, and
when, is serving.py's (admission, preemption, cancels); this is what happens once they do. A
mixin of ServingCore: the state it reads is the core's, under the core's lock."""

from __future__ import annotations

import threading
import time
from typing import TYPE_CHECKING

import torch

from agents.llm import speculative
from agents.llm.sequence import Sequence

if TYPE_CHECKING:
    from agents.llm.adapters import AdapterManager
    from agents.llm.kv_cache import PrefixCache, SlotKVCache
    from agents.llm.loading import LoadedModel
    from agents.llm.metrics import CoreStats
    from agents.llm.runner import ModelRunner
    from agents.llm.sampling import Sampler
    from agents.llm.types import Delta


class ModelSteps:
    model: LoadedModel
    adapters: AdapterManager
    rows: list[Sequence]
    decoding: int
    prefill_chunk: int
    kv: SlotKVCache
    prefixes: PrefixCache
    runner: ModelRunner
    sampler: Sampler
    stats: CoreStats
    _lock: threading.Lock

    def _send(self, sequence: Sequence, delta: Delta | None) -> None:
        raise NotImplementedError

    def _remove(self, sequence: Sequence) -> None:
        raise NotImplementedError

    def _prefill_chunk(self) -> None:
        """One chunk of the most urgent prefilling row; a row whose prompt is done starts decoding."""
        slot = min(range(self.decoding, len(self.rows)),
                   key=lambda i: (-self.rows[i].priority, self.rows[i].admitted_at))
        sequence = self.rows[slot]
        feed = sequence.feed()
        if sequence.swapped is not None:  # a preempted row coming back
            keys, values = sequence.swapped
            sequence.swapped, sequence.looked_up = None, True
            sequence.length = keys.shape[2]
            self.kv.write(slot, keys.to(self.kv.device), values.to(self.kv.device), sequence.length)
            if sequence.length == len(feed):
                if sequence.state.tokens:
                    self._start_decoding(sequence, slot, None)
                    return
                sequence.length -= 1  # its first token is still to pick: recompute the last position
        if not sequence.looked_up:
            # Looked up when its prefill starts, not when admitted: requests that arrive together
            # are prefilled one after another, so the second reuses what the first computed.
            sequence.looked_up = True
            reused, entry = self.prefixes.lookup(sequence.adapter, feed)
            if entry is not None:
                self.kv.write(slot, entry.keys, entry.values, reused)
                sequence.length = reused
        chunk = feed[sequence.length:sequence.length + self.prefill_chunk]
        logits = self.runner.prefill(slot, sequence.adapter, chunk, sequence.length)
        sequence.length += len(chunk)
        self.stats.prefill_tokens += len(chunk)
        if sequence.length < len(feed):
            return
        self._start_decoding(sequence, slot, logits)

    def _start_decoding(self, sequence: Sequence, slot: int, logits: torch.Tensor | None) -> None:
        """The row's prompt is in the KV buffer: pick its first token (unless a preempted row
        picked it before) and move it among the decoding rows."""
        self._remember_prompt(sequence, slot)
        if sequence.state.tokens:  # a preempted row: its next token was chosen before
            sequence.pending = sequence.state.tokens[-1]
        else:
            self.stats.prompt_tokens += len(sequence.ids)
            self.stats.generated_tokens += 1
            assert logits is not None, "a new row's prefill gives its first logits"
            token, delta = self.sampler.step(logits, sequence.state)
            self.stats.first_token(time.monotonic() - sequence.submitted)
            self._send(sequence, delta)
            if delta is not None and delta.finished:
                with self._lock:
                    self._remove(sequence)
                return
            sequence.pending = token
        with self._lock:  # it joins the decoding rows: move it to the first prefilling slot
            target = self.decoding
            if target != slot:
                other = self.rows[target]
                self.kv.swap(slot, target, sequence.length, other.length)
                self.rows[slot], self.rows[target] = other, sequence
            self.decoding += 1
            self.adapters.invalidate()

    def _remember_prompt(self, sequence: Sequence, slot: int) -> None:
        if not self.prefixes.max_tokens or self.prefixes.contains(sequence.adapter, sequence.ids):
            return
        keys, values = self.kv.read(slot, len(sequence.ids))
        self.prefixes.store(sequence.adapter, sequence.ids, keys, values)

    def _decode(self) -> None:
        rows = self.rows[:self.decoding]
        logits = self.runner.decode(tuple(s.adapter for s in rows), [s.next_input for s in rows],
                                    [s.length for s in rows])
        self.stats.steps += 1
        self.stats.generated_tokens += len(rows)
        self.stats.recent.append((time.monotonic(), len(rows)))
        done = []
        for row, sequence in enumerate(rows):
            sequence.length += 1
            token, delta = self.sampler.step(logits[row], sequence.state)
            self._send(sequence, delta)
            if delta is not None and delta.finished:
                done.append(sequence)
            else:
                sequence.pending = token
        if done:
            with self._lock:
                for sequence in done:
                    self._remove(sequence)

    def _speculate(self, sequence: Sequence) -> None:
        """One verification pass over the draft's proposals for a lone greedy row (speculative.py)."""
        for delta in speculative.step(self.model, self.runner, self.sampler, sequence, self.stats):
            self._send(sequence, delta)
            if delta.finished:
                with self._lock:
                    self._remove(sequence)
