"""The serving core: one thread that owns the model and steps one batch continuously, fed by every
task, run, user and HTTP client of the process.

`submit(request)` may be called from any thread and returns a queue of deltas. New requests are
admitted when a row and enough KV memory are free (priority first, then round-robin across
groups, preempting a row of a group over its fair share or of lower priority when needed), are
prefilled in chunks between decode steps (a long prompt delays running rows by one chunk at a
time), join the decoding rows, and leave the moment they finish or are cancelled. A prompt's
keys/values are kept in a prefix cache, so the next request that starts the same way (the same
document's brief and outline) computes only what differs.

A preempted row's keys and values wait in host memory; when it is admitted again they are
copied back and it goes on where it stopped, with the same output it would have had. The model
call stays dumb: this file decides which rows run (scheduler.py picks who is next), kv_cache.py
holds their memory, runner.py builds each forward pass, sampling.py turns logits into text per
request; model_steps.py runs the prefill, decode and verification passes of the rows chosen here;
sequence.py is a request as the core keeps it, speculative.py the draft-and-verify step of a
lone greedy row.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections import Counter
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING

import torch

from agents.llm.files import ModelFolderError
from agents.llm.kv_cache import PrefixCache, SlotKVCache
from agents.llm.metrics import CoreStats, core_metrics, device_metrics, device_name
from agents.llm.model_steps import ModelSteps
from agents.llm.runner import ModelRunner
from agents.llm.sampling import NgramPools, Sampler
from agents.llm.scheduler import WaitingRequests, fair_share, fits, victim
from agents.llm.sequence import Sequence, new_sequence
from agents.llm.threads import for_this_thread, shared_cores_warning
from agents.llm.types import CancelCheck, Delta, GenerationRequest, relay

if TYPE_CHECKING:
    from agents.llm.adapters import AdapterManager
    from agents.llm.config import EngineConfig
    from agents.llm.loading import LoadedModel

log = logging.getLogger(__name__)


class _Cancel:
    def __init__(self, request_id: str):
        self.request_id = request_id


class ServingCore(ModelSteps):
    def __init__(self, model: LoadedModel, adapters: AdapterManager, config: EngineConfig):
        self.model, self.adapters = model, adapters
        self.sampler = Sampler(model.tokenizer, model.eos_ids)
        shape = model.model.config
        heads = shape.num_attention_heads
        head_dim = getattr(shape, "head_dim", None) or shape.hidden_size // heads
        self.max_positions = int(getattr(shape, "max_position_embeddings", 0) or 1 << 30)
        self.max_rows, self.kv_budget = config.max_rows, config.kv_budget_tokens
        self.prefill_chunk = config.prefill_chunk
        self.cancel_poll_s = config.cancel_poll_s
        self.spare = model.draft_tokens + 1 if model.draft is not None else 0  # speculative look-ahead
        self.kv = SlotKVCache(shape.num_hidden_layers, getattr(shape, "num_key_value_heads", heads), head_dim,
                              model.dtype, model.device)
        self.device_name = device_name(self.kv.device)  # for /healthz and the metrics' labels
        self.runner = ModelRunner(model, self.kv, adapters)
        self.prefixes = PrefixCache(config.prefix_cache_tokens)
        self.pools = NgramPools()
        self.waiting: WaitingRequests[Sequence] = WaitingRequests()
        self.rows: list[Sequence] = []  # row i lives in KV slot i; rows[:decoding] decode, the rest prefill
        self.decoding = 0
        self.stats = CoreStats()
        self._admissions = 0
        self._inbox: queue.Queue = queue.Queue()
        self._cancels: set[str] = set()
        self._closed = False
        self._lock = threading.Lock()  # guards the rows and queue that other threads read
        # The thread starts on the first request and ends after idle_exit_s without work, so an
        # engine nobody uses any more can be garbage collected with its model.
        self.idle_exit_s = config.idle_exit_s
        self.threads = config.threads  # the core thread's own OpenMP team (agents/llm/threads.py); None: inherited
        self._thread: threading.Thread | None = None

    # --- the face other threads use -------------------------------------------------------

    def submit(self, request: GenerationRequest, out: queue.Queue | None = None) -> queue.Queue:
        """Queue a request; its deltas arrive on the returned queue, the last with finished=True."""
        out = out if out is not None else queue.Queue()
        try:  # anything wrong with one request fails that request alone
            sequence = new_sequence(self.model, request, out, max_positions=self.max_positions,
                                    kv_budget=self.kv_budget, spare=self.spare, pools=self.pools)
        except Exception as error:  # noqa: BLE001  (a chat template may raise anything on odd input)
            out.put(Delta(request.id, finished=True, finish_reason="error", error=str(error) or type(error).__name__))
            return out
        if self._closed:
            out.put(Sampler.finish(sequence.state, "cancelled", "the server is shutting down"))
            return out
        self._inbox.put(sequence)
        self._ensure_thread()
        return out

    def _ensure_thread(self) -> None:
        with self._lock:
            if self._thread is None and not self._closed:
                self._thread = threading.Thread(target=self._run, name="serving-core", daemon=True)
                self._thread.start()

    def cancel(self, request_id: str) -> None:
        """Stop a request at the next step (or drop it from the queue); it ends "cancelled"."""
        self._inbox.put(_Cancel(request_id))

    def stream(self, requests: Iterable[GenerationRequest], cancel: CancelCheck | None = None) -> Iterator[Delta]:
        """The Engine interface: submit every request, yield their deltas as they come. `cancel` is
        asked from this (the caller's) thread, never from the core's, at most every cancel_poll_s."""
        out: queue.Queue = queue.Queue()
        running = []
        for request in requests:
            self.submit(request, out)
            running.append(request.id)
        yield from relay(out, running, cancel, self.cancel, self.cancel_poll_s)

    def position(self, request_id: str) -> int | None:
        """Requests admitted before this one will be (0: next), or None when it is running or unknown."""
        with self._lock:
            for ahead, sequence in enumerate(self.waiting):
                if sequence.request.id == request_id:
                    return ahead
        return None

    def close(self, timeout: float = 5.0) -> None:
        """Cancel everything queued and running, and stop the thread."""
        self._closed = True
        self._inbox.put(None)
        thread = self._thread
        if thread is not None:
            thread.join(timeout)

    def metrics(self) -> dict[str, float]:
        with self._lock:
            values = core_metrics(self)
        return values | device_metrics(self.kv.device)

    # --- the core's thread ------------------------------------------------------------------

    def _run(self) -> None:
        torch.set_grad_enabled(False)
        if self.threads:
            for_this_thread(self.threads)
            if warning := shared_cores_warning(self.threads):
                log.warning(warning)
        with torch.inference_mode():
            while True:
                try:
                    if not self._take_inbox():
                        return
                    with self._lock:
                        self._apply_cancels()
                        self._admit()
                    self._step()
                except Exception as error:  # noqa: BLE001  (report to every request, keep serving)
                    log.exception("serving step failed")
                    self._fail_everything(str(error))

    def _take_inbox(self) -> bool:
        """Move what arrived into the queue; wait when there is nothing to do. False: the thread
        ends (closed, or idle for idle_exit_s)."""
        idle = not self.rows and not len(self.waiting)
        if idle:
            self.kv.release()
            self.adapters.clear()
        while True:
            try:
                item = self._inbox.get(block=idle, timeout=self.idle_exit_s if idle else None)
            except queue.Empty:
                if not idle:
                    return True
                with self._lock:
                    if self._inbox.empty():  # nothing arrived since: end; submit() starts a new one
                        self._thread = None
                        return False
                continue
            idle = False
            if item is None:
                self._fail_everything("the server is shutting down", reason="cancelled")
                return False
            with self._lock:
                if isinstance(item, _Cancel):
                    self._cancels.add(item.request_id)
                else:
                    self.stats.requests += 1
                    self.waiting.add(item)

    def _step(self) -> None:
        if self.decoding < len(self.rows):
            self._prefill_chunk()
        if self.decoding:
            first = self.rows[0]
            if (self.model.draft is not None and len(self.rows) == 1 and not len(self.waiting)
                    and first.request.temperature <= 0 and not first.state.constrained):
                self._speculate(first)
            else:
                self._decode()

    def _fail_everything(self, error: str, reason: str = "error") -> None:
        with self._lock:
            for sequence in list(self.rows) + list(self.waiting):
                self._send(sequence, Sampler.finish(sequence.state, reason, error))
            self.rows, self.decoding, self.waiting = [], 0, WaitingRequests()
            self.adapters.invalidate()

    def _send(self, sequence: Sequence, delta: Delta | None) -> None:
        if delta is None:
            return
        if delta.finished:
            self.stats.finished[delta.finish_reason or "stop"] += 1
        sequence.out.put(delta)

    # --- admission --------------------------------------------------------------------------

    def _apply_cancels(self) -> None:
        if not self._cancels:
            return
        for sequence in list(self.rows):
            if sequence.request.id in self._cancels:
                self._send(sequence, Sampler.finish(sequence.state, "cancelled"))
                self._remove(sequence)
        for sequence in list(self.waiting):
            if sequence.request.id in self._cancels:
                self.waiting.remove(sequence)
                self._send(sequence, Sampler.finish(sequence.state, "cancelled"))
        self._cancels.clear()

    def _admit(self) -> None:
        while len(self.waiting):
            fair = fair_share(self.rows, self.waiting, self.max_rows)
            rows_of = Counter(s.group for s in self.rows)
            candidate = self.waiting.pick(rows_of, fair)
            if candidate is None:
                return
            if not fits(candidate, self.rows, self.max_rows, self.kv_budget):
                preempted = victim(candidate, self.rows, rows_of, fair)
                if preempted is None:
                    return
                self._preempt(preempted)
                continue
            self.waiting.take(candidate)
            if self._load_adapter(candidate):
                self._place(candidate)

    def _load_adapter(self, sequence: Sequence) -> bool:
        spec = sequence.request.adapter
        if spec is None:
            return True
        in_use = {s.adapter for s in self.rows if s.adapter} | {spec.key}
        try:
            self.adapters.ensure(spec, in_use)
        except (ModelFolderError, ValueError) as error:
            # A bad adapter fails the requests that use it; everything else runs on.
            self._send(sequence, Delta(sequence.request.id, finished=True, finish_reason="error", error=str(error)))
            return False
        return True

    def _place(self, sequence: Sequence) -> None:
        rows = len(self.rows) + 1
        longest = max(s.reserve for s in self.rows + [sequence])
        # Grow by doubling (a reallocation copies the buffer), never past the rows or the budget.
        target_rows = self.kv.rows
        if rows > self.kv.rows:
            target_rows = min(self.max_rows, max(rows, 2 * self.kv.rows, 4), max(rows, self.kv_budget // longest))
        self.kv.reserve(target_rows, longest, self.kv_budget)
        self.rows.append(sequence)
        self._admissions += 1
        sequence.admitted_at = self._admissions
        sequence.length, sequence.pending, sequence.looked_up = 0, None, False

    def _preempt(self, sequence: Sequence) -> None:
        """Give a row's place to a more entitled request. Its keys and values are copied to host
        memory (a copy of one row, far cheaper than computing them again), and it comes back
        later exactly where it stopped."""
        self.stats.preemptions += 1
        if sequence.length:
            keys, values = self.kv.read(self.rows.index(sequence), sequence.length)
            sequence.swapped = (keys.cpu(), values.cpu())
        self._remove(sequence)
        self.waiting.add(sequence, front=True)

    def _remove(self, sequence: Sequence) -> None:
        """Free a row's slot, keeping rows dense: decoding rows first, then prefilling ones."""
        slot = self.rows.index(sequence)
        hole = slot
        if slot < self.decoding:
            last = self.decoding - 1
            if last != slot:
                self.kv.move(last, slot, self.rows[last].length)
                self.rows[slot] = self.rows[last]
            hole = last
            self.decoding -= 1
        end = len(self.rows) - 1
        if end != hole:
            self.kv.move(end, hole, self.rows[end].length)
            self.rows[hole] = self.rows[end]
        self.rows.pop()
        self.adapters.invalidate()
