"""The default engine: one Hugging Face causal LM in this process, many requests decoded together.

All requests given to one `stream()` call are decoded as one batch, step by step, each with its
own LoRA adapter (peft adapters, applied per row by agents/llm/multi_lora.py), sampling settings,
stop strings and limits. A request
that finishes leaves the batch at once (its rows are dropped from the KV cache) and its last
delta is yielded then, so nobody waits for the slowest. A token prefix shared by every prompt
(brief + outline) is computed once per adapter and copied into each request's cache.
"""

from __future__ import annotations

import logging
import time
from collections import OrderedDict
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import torch

from agents.llm.files import ModelFolderError, check_adapter_folder, check_model_folder
from agents.llm.multi_lora import MultiLora
from agents.llm.quantization import is_int8_folder, load_int8, quantize_int8
from agents.llm.types import AdapterSpec, CancelCheck, Delta, GenerationRequest

log = logging.getLogger(__name__)

def cpu_has_fast_bf16() -> bool:
    """AVX-512 BF16 or AMX: bf16 matmuls beat fp32 by a wide margin on such CPUs."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def pick_dtype(name: str, device: str) -> torch.dtype:
    if name == "auto":
        if device.startswith("cuda"):
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.bfloat16 if cpu_has_fast_bf16() else torch.float32
    try:
        return {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[name]
    except KeyError:
        raise ValueError(f"unknown dtype {name!r}: use auto, float32, bfloat16 or float16") from None


@dataclass
class _Running:
    """Decoding state of one request."""

    request: GenerationRequest
    prompt_tokens: int
    generator: torch.Generator | None
    started: float
    tokens: list[int] = field(default_factory=list)
    text: str = ""
    sent: int = 0  # characters of `text` already yielded
    prefix_offset: int = 0
    read_offset: int = 0
    first_token_s: float | None = None
    seen: set[int] = field(default_factory=set)  # token ids the repetition penalty applies to
    proposed: int = 0  # speculative decoding: draft tokens proposed, and accepted
    accepted: int = 0


class TransformersEngine:
    def __init__(self, model_path: str | Path, *, dtype: str = "auto", device: str = "cpu",
                 int8: bool = False, base_model_name: str = "", max_adapters: int = 8,
                 share_prefix: bool = True, min_shared_prefix: int = 16, draft_model_path: str | Path = "",
                 draft_tokens: int = 4):
        from transformers import AutoModelForCausalLM, AutoTokenizer

        folder = check_model_folder(model_path)
        self.model_path = str(folder)
        self.base_model_name = base_model_name or folder.name
        self.device = device
        self.dtype = pick_dtype(dtype, device)
        self.int8 = int8
        if int8:
            self.dtype = torch.float32
        self.share_prefix = share_prefix
        self.min_shared_prefix = min_shared_prefix
        self.max_adapters = max_adapters
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(folder)
        except (OSError, ValueError) as error:
            raise ModelFolderError(f"{folder}: the tokenizer could not be loaded ({error})") from error
        if is_int8_folder(folder):  # already quantized by training/quantize.py
            self.int8, self.dtype = True, torch.float32
        if self.int8 and not device.startswith("cpu"):
            raise ValueError("int8 dynamic quantization runs on CPU only")
        try:
            if is_int8_folder(folder):
                model = load_int8(folder)
            else:
                model = AutoModelForCausalLM.from_pretrained(folder, dtype=self.dtype)
        except (OSError, ValueError, RuntimeError) as error:
            raise ModelFolderError(f"{folder}: could not be loaded ({error})") from error
        model.to(device).eval()
        if int8 and not is_int8_folder(folder):
            model = quantize_int8(model)
        self.model = model
        self.lora = MultiLora(self.model)
        self._adapters: OrderedDict[str, AdapterSpec] = OrderedDict()
        eos = self.model.generation_config.eos_token_id
        self.eos_ids = set(eos if isinstance(eos, list) else [eos] if eos is not None else [])
        if self.tokenizer.eos_token_id is not None:
            self.eos_ids.add(self.tokenizer.eos_token_id)
        self.pad_id = self.tokenizer.pad_token_id
        if self.pad_id is None:
            self.pad_id = next(iter(self.eos_ids), 0)
        self.draft, self.draft_tokens = None, draft_tokens
        if draft_model_path:
            self.draft = self._load_draft(draft_model_path)

    def _load_draft(self, path: str | Path):
        """A smaller model with the same tokenizer (a distilled student) that proposes tokens for
        this one to verify: see _decode_speculative."""
        from transformers import AutoModelForCausalLM, AutoTokenizer

        folder = check_model_folder(path)
        if AutoTokenizer.from_pretrained(folder).get_vocab() != self.tokenizer.get_vocab():
            raise ModelFolderError(f"{folder}: the draft model's tokenizer differs from {self.model_path}'s")
        draft = load_int8(folder) if is_int8_folder(folder) else AutoModelForCausalLM.from_pretrained(
            folder, dtype=self.dtype)
        return draft.to(self.device).eval()

    # --- adapters ------------------------------------------------------------------------

    def _ensure_adapter(self, spec: AdapterSpec, in_use: set[str]) -> None:
        """Load an adapter unless it is loaded; evict the least recently used beyond the limit."""
        if spec.name in self._adapters:
            if self._adapters[spec.name] != spec:
                raise ModelFolderError(f"{spec.path}: another adapter is already loaded as {spec.name!r}")
            self._adapters.move_to_end(spec.name)
            return
        if self.int8:
            raise ModelFolderError(f"{spec.path}: LoRA adapters need a float model; this engine is int8")
        if spec.base_model and spec.base_model != self.base_model_name:
            raise ModelFolderError(f"{spec.path}: adapter was trained on {spec.base_model!r}, "
                                   f"but this engine serves {self.base_model_name!r}")
        check_adapter_folder(spec.path, spec.sha256)
        self.lora.load(spec.name, spec.path)  # all or nothing: a failure changes no layer
        self._adapters[spec.name] = spec
        while len(self._adapters) > self.max_adapters:
            victim = next((name for name in self._adapters if name not in in_use), None)
            if victim is None:
                break
            self.lora.unload(victim)
            del self._adapters[victim]

    def loaded_adapters(self) -> list[str]:
        return list(self._adapters)

    # --- prompts and text ----------------------------------------------------------------

    def prompt_ids(self, request: GenerationRequest) -> list[int]:
        if request.messages is not None:
            text = self.tokenizer.apply_chat_template(request.messages, add_generation_prompt=True, tokenize=False)
            text += request.assistant_prefix
        elif request.prompt is not None:
            text = request.prompt
        else:
            raise ValueError("a request needs messages or a prompt")
        ids = self.tokenizer(text, add_special_tokens=request.messages is None).input_ids
        if not ids:
            raise ValueError("the prompt is empty")
        return list(ids)

    def _new_text(self, state: _Running) -> str:
        """Incremental detokenisation: only text that can no longer change (no half characters)."""
        decode = self.tokenizer.decode
        before = decode(state.tokens[state.prefix_offset:state.read_offset], skip_special_tokens=True)
        after = decode(state.tokens[state.prefix_offset:], skip_special_tokens=True)
        if len(after) > len(before) and not after.endswith("\ufffd"):
            state.prefix_offset, state.read_offset = state.read_offset, len(state.tokens)
            return after[len(before):]
        return ""

    # --- decoding ------------------------------------------------------------------------

    def stream(self, requests: Iterable[GenerationRequest], cancel: CancelCheck | None = None) -> Iterator[Delta]:
        started = time.monotonic()
        runnable: list[tuple[GenerationRequest, list[int]]] = []
        batch = list(requests)
        in_use = {r.adapter.name for r in batch if r.adapter}
        for request in batch:
            try:
                if request.max_new_tokens < 1:
                    raise ValueError("max_new_tokens must be at least 1")
                if request.adapter is not None:
                    self._ensure_adapter(request.adapter, in_use)
                runnable.append((request, self.prompt_ids(request)))
            except (ModelFolderError, ValueError) as error:
                # A bad adapter or prompt fails this request only; the rest of the batch runs.
                yield Delta(request.id, finished=True, finish_reason="error", error=str(error))
        if runnable:
            with torch.inference_mode():
                yield from self._decode(runnable, cancel, started)

    def _forward(self, **inputs):
        # Only the last position's logits are needed: the full [batch, length, vocab] tensor of
        # a prefill would cost as much as the rest of the model.
        return self.model(**inputs, use_cache=True, logits_to_keep=1).logits[:, -1, :]

    def _shared_prefix(self, prompts: list[list[int]]) -> int:
        if not self.share_prefix or len(prompts) < 2:
            return 0
        first, length = prompts[0], min(len(p) for p in prompts) - 1  # keep one token per prompt
        for other in prompts[1:]:
            same = 0
            while same < length and other[same] == first[same]:
                same += 1
            length = same
        return length if length >= self.min_shared_prefix else 0

    def _decode(self, runnable, cancel: CancelCheck | None, started: float) -> Iterator[Delta]:
        states = [_Running(r, len(ids), _generator(r), started) for r, ids in runnable]
        for state in states:
            request = state.request
            if request.repetition_penalty != 1.0 and request.assistant_prefix:
                # The draft being continued counts as "already said".
                state.seen.update(self.tokenizer(request.assistant_prefix, add_special_tokens=False).input_ids)
        prompts = [ids for _, ids in runnable]
        adapters = [r.adapter.name if r.adapter else None for r, _ in runnable]
        try:
            if self.draft is not None and len(states) == 1 and states[0].request.temperature <= 0:
                yield from self._decode_speculative(states[0], prompts[0], adapters[0], cancel)
            else:
                yield from self._decode_batch(states, prompts, adapters, cancel)
        finally:
            self.lora.clear()

    def _decode_batch(self, states: list[_Running], prompts: list[list[int]], adapters: list[str | None],
                      cancel: CancelCheck | None) -> Iterator[Delta]:
        from transformers import DynamicCache

        device = self.device
        shared = self._shared_prefix(prompts)
        cache = DynamicCache(config=self.model.config)
        if shared:
            # The shared prefix once per distinct adapter, then copied to the rows that use it.
            distinct = list(dict.fromkeys(adapters))
            prefix = torch.tensor([prompts[0][:shared]] * len(distinct), device=device)
            self.lora.prepare(distinct)
            self._forward(input_ids=prefix, past_key_values=cache)
            cache.batch_select_indices(torch.tensor([distinct.index(a) for a in adapters], device=device))
        self.lora.prepare(adapters)
        suffixes = [ids[shared:] for ids in prompts]
        width = max(len(s) for s in suffixes)
        input_ids = torch.full((len(prompts), width), self.pad_id, dtype=torch.long, device=device)
        suffix_mask = torch.zeros((len(prompts), width), dtype=torch.long, device=device)
        for row, suffix in enumerate(suffixes):  # left padding, so every prompt ends in the last column
            input_ids[row, width - len(suffix):] = torch.tensor(suffix, device=device)
            suffix_mask[row, width - len(suffix):] = 1
        attention = torch.cat([torch.ones((len(prompts), shared), dtype=torch.long, device=device), suffix_mask], 1)
        positions = (attention.cumsum(-1) - 1).clamp(min=0)
        logits = self._forward(input_ids=input_ids, attention_mask=attention,
                               position_ids=positions[:, shared:], past_key_values=cache)
        last_position = positions[:, -1]
        active = list(range(len(states)))

        while active:
            next_tokens: list[int] = []
            keep: list[int] = []
            cancelled = cancel([states[i].request.id for i in active]) if cancel else set()
            for row, index in enumerate(active):
                state = states[index]
                if state.request.id in cancelled:
                    yield self._finish(state, "cancelled")
                    continue
                token = self._pick(logits[row], state)
                delta = self._advance(state, token)
                if delta is not None:
                    yield delta
                if delta is None or not delta.finished:
                    next_tokens.append(token)
                    keep.append(row)
            if not keep:
                break
            if len(keep) < len(active):
                rows = torch.tensor(keep, device=device)
                cache.batch_select_indices(rows)
                self.lora.keep_rows(rows)
                attention, last_position = attention[rows], last_position[rows]
                active = [active[r] for r in keep]
            attention = torch.cat([attention, torch.ones((len(active), 1), dtype=torch.long, device=device)], 1)
            last_position = last_position + 1
            logits = self._forward(
                input_ids=torch.tensor(next_tokens, device=device).unsqueeze(1),
                attention_mask=attention, position_ids=last_position.unsqueeze(1), past_key_values=cache,
            )

    def _pick(self, logits: torch.Tensor, state: _Running) -> int:
        if len(state.tokens) < state.request.min_new_tokens and self.eos_ids:
            logits = logits.clone()
            logits[list(self.eos_ids)] = float("-inf")
        return _choose(logits, state)

    def _decode_speculative(self, state: _Running, prompt: list[int], adapter: str | None,
                            cancel: CancelCheck | None) -> Iterator[Delta]:
        """Greedy decoding of one request, sped up by the draft model: the draft proposes
        `draft_tokens` tokens one by one (cheap), this model checks them all in one forward pass
        and keeps the longest run that matches its own greedy choices, plus its own next token.
        The text is exactly what this model alone would write; only the number of its forward
        passes drops, by the share of proposals it accepts."""
        from transformers import DynamicCache

        device, k = self.device, self.draft_tokens
        target, draft = DynamicCache(config=self.model.config), DynamicCache(config=self.draft.config)
        self.lora.prepare([adapter])
        sequence = list(prompt)  # the prompt and every token kept so far
        if len(prompt) > 1:  # this model's cache holds all of `sequence` but its last token
            self._forward(input_ids=torch.tensor([prompt[:-1]], device=device), past_key_values=target)
        drafted = 0  # how many leading tokens of `sequence` the draft's cache holds
        while True:
            if cancel and cancel([state.request.id]):
                yield self._finish(state, "cancelled")
                return
            # 1. The draft proposes k tokens, greedy and with the request's repetition penalty.
            guess = _Running(state.request, 0, None, state.started, tokens=list(state.tokens), seen=set(state.seen))
            proposals, feed = [], sequence[drafted:]
            for _ in range(k):
                draft_logits = self.draft(input_ids=torch.tensor([feed], device=device), past_key_values=draft,
                                          use_cache=True, logits_to_keep=1).logits[0, -1]
                token = self._pick(draft_logits, guess)
                guess.tokens.append(token)
                if state.request.repetition_penalty != 1.0:
                    guess.seen.add(token)
                proposals.append(token)
                feed = [token]
            # 2. This model scores its last token and every proposal in one pass: scores[0]
            # follows the last kept token, scores[i] follows proposals[i - 1].
            scores = self.model(input_ids=torch.tensor([sequence[-1:] + proposals], device=device),
                                past_key_values=target, use_cache=True, logits_to_keep=k + 1).logits[0]
            before, kept = len(sequence), 0
            for position in range(k + 1):
                token = self._pick(scores[position], state)
                delta = self._advance(state, token)
                if delta is not None:
                    yield delta
                    if delta.finished:
                        return
                sequence.append(token)
                if position == k:
                    break
                state.proposed += 1
                if token != proposals[position]:
                    break
                kept += 1
                state.accepted += 1
            # 3. Forget the rejected proposals. This model keeps the accepted ones (its own last
            # choice is fed next round); the draft, which saw all but its last proposal, keeps
            # the prefix that matches.
            _crop(target, len(sequence) - 1)
            drafted = before + min(kept, k - 1)
            _crop(draft, drafted)

    def _advance(self, state: _Running, token: int) -> Delta | None:
        """Take one new token; return the delta to yield, if any."""
        request = state.request
        if state.first_token_s is None:
            state.first_token_s = time.monotonic() - state.started
        if token in self.eos_ids:
            return self._finish(state, "stop")
        state.tokens.append(token)
        if request.repetition_penalty != 1.0:
            state.seen.add(token)
        state.text += self._new_text(state)
        if request.stop:
            window = state.text[max(0, state.sent - max(map(len, request.stop))):]
            hits = [window.find(stop) for stop in request.stop if stop in window]
            if hits:
                state.text = state.text[:len(state.text) - len(window) + min(hits)]
                return self._finish(state, "stop")
        if len(state.tokens) >= request.max_new_tokens:
            return self._finish(state, "length")
        # Hold back a tail that might be the start of a stop string.
        hold = max((n for stop in request.stop for n in range(len(stop) - 1, 0, -1)
                    if state.text.endswith(stop[:n])), default=0)
        ready = len(state.text) - hold
        if ready <= state.sent:
            return None
        piece, state.sent = state.text[state.sent:ready], ready
        return Delta(request.id, piece, prompt_tokens=state.prompt_tokens, completion_tokens=len(state.tokens))

    def _finish(self, state: _Running, reason: str) -> Delta:
        piece, state.sent = state.text[state.sent:], len(state.text)
        elapsed = time.monotonic() - state.started
        timings = {"elapsed_s": round(elapsed, 4)}
        if state.first_token_s is not None:
            timings["first_token_s"] = round(state.first_token_s, 4)
        if state.proposed:
            timings["draft_acceptance"] = round(state.accepted / state.proposed, 4)
        return Delta(state.request.id, piece, finished=True, finish_reason=reason,
                     prompt_tokens=state.prompt_tokens, completion_tokens=len(state.tokens), timings=timings)


def _crop(cache, length: int) -> None:
    extra = cache.get_seq_length() - length
    if extra > 0:
        cache.crop(-extra)


def _generator(request: GenerationRequest) -> torch.Generator | None:
    if request.temperature <= 0:
        return None
    generator = torch.Generator()
    generator.manual_seed(request.seed)
    return generator


def _choose(logits: torch.Tensor, state: _Running) -> int:
    request = state.request
    if state.seen:
        seen = torch.tensor(sorted(state.seen), device=logits.device)
        scores = logits[seen]
        logits = logits.clone()
        logits[seen] = torch.where(scores > 0, scores / request.repetition_penalty, scores * request.repetition_penalty)
    if state.generator is None:
        return int(torch.argmax(logits))
    probs = torch.softmax(logits.float().cpu() / request.temperature, dim=-1)
    if request.top_p < 1.0:
        ordered, order = torch.sort(probs, descending=True)
        outside = ordered.cumsum(-1) - ordered > request.top_p
        ordered[outside] = 0
        probs = torch.zeros_like(probs).scatter(0, order, ordered)
    return int(torch.multinomial(probs, 1, generator=state.generator))
