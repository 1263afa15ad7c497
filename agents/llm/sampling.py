"""What happens to one request between logits and text: the token it picks (greedy or seeded
sampling, repetition penalty, min tokens), incremental detokenisation, stop strings, limits, and
the deltas it yields. Per request, so a row behaves the same in any batch."""

from __future__ import annotations

import math
import threading
import time
import weakref
from dataclasses import dataclass, field

import torch

from agents.llm.guided import Guide, GuideError
from agents.llm.types import Delta, GenerationRequest, sentence_cut


def check_sampling(request: GenerationRequest) -> None:
    """Settings that would poison a batch (NaN, infinities, negatives) are refused up front."""
    if not isinstance(request.max_new_tokens, int) or request.max_new_tokens < 1:
        raise ValueError("max_new_tokens must be a whole number of at least 1")
    for name, low in (("temperature", 0.0), ("top_p", 0.0), ("repetition_penalty", 0.0)):
        value = getattr(request, name)
        if not isinstance(value, int | float) or not math.isfinite(value) or value < low:
            raise ValueError(f"{name} must be a finite number of at least {low:g}")
    if request.top_p == 0 or request.repetition_penalty == 0:
        raise ValueError("top_p and repetition_penalty must be above 0")
    if request.min_new_tokens < 0:
        raise ValueError("min_new_tokens must not be negative")
    if not isinstance(request.block_ngrams, int) or not 0 <= request.block_ngrams <= 16 or request.block_ngrams == 1:
        raise ValueError("block_ngrams must be 0 (off) or a whole number from 2 to 16")
    if not isinstance(request.ground_bias, int | float) or not 0 <= request.ground_bias <= 20:
        raise ValueError("ground_bias must be a number from 0 to 20")
    if not isinstance(request.no_repeat_ngrams, int) or not 0 <= request.no_repeat_ngrams <= 64 \
            or request.no_repeat_ngrams == 1:
        raise ValueError("no_repeat_ngrams must be 0 (off) or a whole number from 2 to 64")
    if not isinstance(request.sentences, int) or request.sentences < 0:
        raise ValueError("sentences must be a whole number, 0 for no limit")


GROUND_CONTEXT = 2  # tokens of context that must match a ground text before its next token is favoured


class Ground:
    """The phrases of a request's ground texts: `following(tokens)` are the tokens that come after
    the last GROUND_CONTEXT of `tokens` somewhere in them."""

    def __init__(self, texts: tuple[str, ...], tokenize):
        self.next: dict[tuple[int, ...], set[int]] = {}
        for text in texts:
            tokens = tokenize(text)
            for end in range(GROUND_CONTEXT, len(tokens)):
                self.next.setdefault(tuple(tokens[end - GROUND_CONTEXT:end]), set()).add(tokens[end])
        self.ids = {key: torch.tensor(sorted(found)) for key, found in self.next.items()}

    def following(self, tokens: list[int]) -> torch.Tensor | None:
        if len(tokens) < GROUND_CONTEXT:
            return None
        return self.ids.get(tuple(tokens[-GROUND_CONTEXT:]))


class NgramPool:
    """The token n-grams the requests of one pool have written: `banned(owner, tokens)` are the
    next tokens that would repeat an n-gram somebody else wrote. Text seeded with `seed` (written
    before, elsewhere) belongs to nobody, so it is banned for everyone."""

    def __init__(self, n: int):
        self.n = n
        self.next: dict[tuple[int, ...], dict[int, set[str]]] = {}
        self.seeded: set[int] = set()
        self._lock = threading.Lock()  # rows of one pool may sit in different engines' threads

    def seed(self, tokens: list[int], owner: str = "") -> None:
        with self._lock:
            for end in range(self.n, len(tokens) + 1):
                self._add(tokens[end - self.n:end], owner)

    def seed_text(self, text: str, tokenize) -> None:
        """Text written before (`avoid`): tokenized and added once per pool, however many of its
        requests name it."""
        key = hash(text)
        with self._lock:
            if key in self.seeded:
                return
            self.seeded.add(key)
        self.seed(tokenize(text))

    def add(self, owner: str, tokens: list[int]) -> None:
        if len(tokens) >= self.n:
            with self._lock:
                self._add(tokens[-self.n:], owner)

    def _add(self, gram: list[int], owner: str) -> None:
        self.next.setdefault(tuple(gram[:-1]), {}).setdefault(gram[-1], set()).add(owner)

    def banned(self, owner: str, tokens: list[int]) -> list[int]:
        if len(tokens) < self.n - 1:
            return []
        with self._lock:
            followers = self.next.get(tuple(tokens[len(tokens) - self.n + 1:]), {})
            return [token for token, owners in followers.items() if owners - {owner}]


class OwnNgrams:
    """The token n-grams one row holds: `banned(tokens)` are the next tokens that would repeat one."""

    def __init__(self, n: int, tokens: list[int]):
        self.n = n
        self.next: dict[tuple[int, ...], set[int]] = {}
        for end in range(n, len(tokens) + 1):
            self.add(tokens[:end])

    def add(self, tokens: list[int]) -> None:
        if len(tokens) >= self.n:
            self.next.setdefault(tuple(tokens[-self.n:-1]), set()).add(tokens[-1])

    def banned(self, tokens: list[int]) -> list[int]:
        if len(tokens) < self.n - 1:
            return []
        return sorted(self.next.get(tuple(tokens[len(tokens) - self.n + 1:]), ()))


class NgramPools:
    """Pools by name, alive while a request uses them."""

    def __init__(self):
        self._pools: weakref.WeakValueDictionary[tuple[str, int], NgramPool] = weakref.WeakValueDictionary()
        self._lock = threading.Lock()

    def get(self, name: str, n: int) -> NgramPool:
        with self._lock:
            pool = self._pools.get((name, n))
            if pool is None:
                pool = self._pools[(name, n)] = NgramPool(n)
            return pool


@dataclass(eq=False)
class RequestState:
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
    seen_ids: torch.Tensor | None = None  # the same ids as a tensor, rebuilt only when `seen` grows
    proposed: int = 0  # speculative decoding: draft tokens proposed, and accepted
    accepted: int = 0
    guide: Guide | None = None  # guided decoding: where the row is in its grammar
    pool: NgramPool | None = None  # n-grams it must not repeat from its siblings
    ground: Ground | None = None  # phrases of its sources it is steered to keep to
    own: OwnNgrams | None = None  # its own n-grams, which it may not repeat
    history: list[int] = field(default_factory=list)  # the assistant prefix's tokens, then its own
    logprob: float = 0.0  # summed log-probability of its tokens, when asked for

    @property
    def constrained(self) -> bool:
        """Its tokens depend on more than its logits (no speculative decoding for it)."""
        return (self.guide is not None or self.pool is not None or self.ground is not None or self.own is not None
                or self.request.logprobs)


def new_state(request: GenerationRequest, prompt_tokens: int, tokenizer, started: float | None = None,
              eos_ids: set[int] | None = None, pools: NgramPools | None = None) -> RequestState:
    generator = None
    if request.temperature > 0:
        generator = torch.Generator()
        generator.manual_seed(request.seed)
    state = RequestState(request, prompt_tokens, generator, started if started is not None else time.monotonic())
    if request.response_format:
        state.guide = Guide(tokenizer, eos_ids or set(), request.response_format)
    if request.block_ngrams and pools is not None:
        state.pool = pools.get(request.ngram_pool or request.id, request.block_ngrams)
        for text in request.avoid:
            state.pool.seed_text(text, lambda t: tokenizer(t, add_special_tokens=False).input_ids)
    if request.ground_bias and request.ground:
        state.ground = Ground(request.ground, lambda t: tokenizer(t, add_special_tokens=False).input_ids)
    prefix = tokenizer(request.assistant_prefix, add_special_tokens=False).input_ids if request.assistant_prefix else []
    if request.repetition_penalty != 1.0 and prefix:
        state.seen.update(prefix)  # the draft being continued counts as "already said"
    if request.no_repeat_ngrams:
        state.history = list(prefix)
        state.own = OwnNgrams(request.no_repeat_ngrams, state.history)
    return state


class Sampler:
    """Turns a row's logits into its next token and its text, for one model's tokenizer."""

    def __init__(self, tokenizer, eos_ids: set[int]):
        self.tokenizer, self.eos_ids = tokenizer, eos_ids
        self._eos = sorted(eos_ids)

    def pick(self, logits: torch.Tensor, state: RequestState) -> int:
        if state.guide is not None:  # the grammar decides where the answer may end
            logits = state.guide.mask(logits)
        elif len(state.tokens) < state.request.min_new_tokens and self._eos:
            logits = logits.clone()
            logits[self._eos] = float("-inf")
        if state.ground is not None:
            following = state.ground.following(state.tokens)
            if following is not None:
                logits = logits.clone()
                logits[following.to(logits.device)] += state.request.ground_bias
        banned = state.pool.banned(state.request.id, state.tokens) if state.pool is not None else []
        if state.own is not None:
            banned += state.own.banned(state.history)
        if banned:
            logits = logits.clone()
            logits[banned] = float("-inf")
        return choose(logits, state)

    def step(self, logits: torch.Tensor, state: RequestState) -> tuple[int, Delta | None]:
        """Pick and take the next token. A grammar that fails (a dead end), or logits that are
        not numbers (a broken adapter on this row), end this request alone, as an error."""
        if not math.isfinite(float(logits.max())):  # one pass: NaN or +inf anywhere makes the max so
            return -1, self.finish(state, "error", "the model's output for this request is not a number (NaN or "
                                                   "infinity): a broken adapter or weights")
        try:
            token = self.pick(logits, state)
            if state.request.logprobs and token not in self.eos_ids:
                state.logprob += float(torch.log_softmax(logits.float(), dim=-1)[token])
            return token, self.advance(state, token)
        except GuideError as error:
            return -1, self.finish(state, "error", str(error))

    def _new_text(self, state: RequestState) -> str:
        """Incremental detokenisation: only text that can no longer change (no half characters)."""
        decode = self.tokenizer.decode
        before = decode(state.tokens[state.prefix_offset:state.read_offset], skip_special_tokens=True)
        after = decode(state.tokens[state.prefix_offset:], skip_special_tokens=True)
        if len(after) > len(before) and not after.endswith("\ufffd"):
            state.prefix_offset, state.read_offset = state.read_offset, len(state.tokens)
            return after[len(before):]
        return ""

    def advance(self, state: RequestState, token: int) -> Delta | None:
        """Take one new token; return the delta to yield, if any."""
        request = state.request
        if state.first_token_s is None:
            state.first_token_s = time.monotonic() - state.started
        if state.guide is not None:
            state.guide.accept(token)
        if token in self.eos_ids:
            return self.finish(state, "stop")
        state.tokens.append(token)
        if request.repetition_penalty != 1.0:
            state.seen.add(token)
        if state.pool is not None:
            state.pool.add(request.id, state.tokens)
        if state.own is not None:
            state.history.append(token)
            state.own.add(state.history)
        state.text += self._new_text(state)
        if state.guide is not None and state.guide.finished:
            return self.finish(state, "stop")
        if request.sentences:
            cut = sentence_cut(state.text, request.sentences)
            if cut is not None:
                state.text = state.text[:max(cut, state.sent)]
                return self.finish(state, "stop")
        if request.stop:
            window = state.text[max(0, state.sent - max(map(len, request.stop))):]
            hits = [window.find(stop) for stop in request.stop if stop in window]
            if hits:
                state.text = state.text[:len(state.text) - len(window) + min(hits)]
                return self.finish(state, "stop")
        if len(state.tokens) >= request.max_new_tokens:
            return self.finish(state, "length")
        # Hold back a tail that might be the start of a stop string.
        hold = max((n for stop in request.stop for n in range(len(stop) - 1, 0, -1)
                    if state.text.endswith(stop[:n])), default=0)
        ready = len(state.text) - hold
        if ready <= state.sent:
            return None
        piece, state.sent = state.text[state.sent:ready], ready
        return Delta(request.id, piece, prompt_tokens=state.prompt_tokens, completion_tokens=len(state.tokens))

    @staticmethod
    def finish(state: RequestState, reason: str, error: str = "") -> Delta:
        piece, state.sent = state.text[state.sent:], len(state.text)
        elapsed = time.monotonic() - state.started
        timings = {"elapsed_s": round(elapsed, 4)}
        if state.first_token_s is not None:
            timings["first_token_s"] = round(state.first_token_s, 4)
        if state.proposed:
            timings["draft_acceptance"] = round(state.accepted / state.proposed, 4)
        return Delta(state.request.id, piece, finished=True, finish_reason=reason, error=error,
                     prompt_tokens=state.prompt_tokens, completion_tokens=len(state.tokens), timings=timings,
                     logprob=state.logprob if state.request.logprobs else None)


def choose(logits: torch.Tensor, state: RequestState) -> int:
    request = state.request
    if state.seen:
        if state.seen_ids is None or state.seen_ids.numel() != len(state.seen):
            state.seen_ids = torch.tensor(sorted(state.seen), device=logits.device)
        seen = state.seen_ids
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
