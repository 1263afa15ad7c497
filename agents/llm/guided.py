"""Guided decoding: a request's JSON schema (or Lark grammar, or regular expression) becomes a
token mask applied to its row's logits at every step, so a small model can only write text the
schema accepts. Built on llguidance (the library vLLM, SGLang and llama.cpp use; chosen over
lm-format-enforcer by bench/guided.py on this CPU), per request, so guided and free rows share
one batch.

`response_format` follows the OpenAI API: {"type": "json_schema", "json_schema": {"schema": ...}},
{"type": "json_object"}, plus {"type": "grammar", "grammar": "<lark>"} and {"type": "regex",
"regex": "..."}."""

from __future__ import annotations

import json
import threading
import weakref
from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:
    from llguidance._lib import JsonCompileOptions

_tokenizers: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
_lock = threading.Lock()


# One line, one space after separators: what models read most often; unknown keywords are ignored.
JSON_STYLE: JsonCompileOptions = {"whitespace_flexible": False, "item_separator": ", ", "key_separator": ": ",
                                  "lenient": True}


class GuideError(ValueError):
    pass


def grammar_for(response_format: dict) -> str:
    """The llguidance grammar for an OpenAI-style response_format; GuideError when it is not one."""
    import llguidance

    if not isinstance(response_format, dict):
        raise GuideError("response_format must be an object")
    kind = response_format.get("type")
    if kind == "json_schema":
        spec = response_format.get("json_schema")
        schema = spec.get("schema") if isinstance(spec, dict) else None
        if not isinstance(schema, dict):
            raise GuideError("response_format.json_schema.schema must be a JSON schema object")
        grammar = llguidance.LLMatcher.grammar_from_json_schema(json.dumps(schema), defaults=JSON_STYLE)
    elif kind == "json_object":
        grammar = llguidance.LLMatcher.grammar_from_json_schema(json.dumps({"type": "object"}), defaults=JSON_STYLE)
    elif kind == "grammar" and isinstance(response_format.get("grammar"), str):
        grammar = llguidance.LLMatcher.grammar_from_lark(response_format["grammar"])
    elif kind == "regex" and isinstance(response_format.get("regex"), str):
        grammar = llguidance.LLMatcher.grammar_from_regex(response_format["regex"])
    elif kind in (None, "text"):
        return ""
    else:
        raise GuideError(f"response_format type {kind!r} is not supported (json_schema, json_object, grammar, regex)")
    failed, problems = llguidance.LLMatcher.validate_grammar_with_warnings(grammar)
    if failed:
        raise GuideError(f"response_format is not a usable grammar: {problems[0] if problems else 'invalid'}")
    return grammar


def _ll_tokenizer(tokenizer, eos_ids: set[int]):
    """llguidance's view of a Hugging Face tokenizer (about a second to build): one per tokenizer."""
    import llguidance.hf

    with _lock:
        found = _tokenizers.get(tokenizer)
        if found is None:
            found = llguidance.hf.from_tokenizer(tokenizer, eos_token=sorted(eos_ids) or None)
            _tokenizers[tokenizer] = found
        return found


class Guide:
    """One request's place in its grammar."""

    def __init__(self, tokenizer, eos_ids: set[int], response_format: dict):
        import llguidance

        grammar = grammar_for(response_format)
        self.matcher = llguidance.LLMatcher(_ll_tokenizer(tokenizer, eos_ids), grammar)
        if self.matcher.is_error():
            raise GuideError(self.matcher.get_error())
        self._bits = torch.tensor([1 << i for i in range(8)], dtype=torch.uint8)

    def allowed(self, vocab_size: int) -> torch.Tensor:
        """[vocab_size] bool: the tokens the grammar accepts next (the end token once it may end)."""
        packed = torch.frombuffer(bytearray(self.matcher.compute_bitmask()), dtype=torch.uint8)
        bits = (packed.unsqueeze(-1) & self._bits).ne(0).flatten()
        if bits.numel() >= vocab_size:
            return bits[:vocab_size]
        return torch.cat([bits, torch.zeros(vocab_size - bits.numel(), dtype=torch.bool)])

    def mask(self, logits: torch.Tensor) -> torch.Tensor:
        allowed = self.allowed(logits.shape[-1]).to(logits.device)
        if not bool(allowed.any()):
            raise GuideError(f"the grammar allows no next token ({self.matcher.get_error() or 'dead end'})")
        return logits.masked_fill(~allowed, float("-inf"))

    def accept(self, token: int) -> None:
        if not self.matcher.consume_token(token):
            raise GuideError(f"token {token} breaks the grammar: {self.matcher.get_error()}")

    @property
    def finished(self) -> bool:
        """The grammar is complete and allows nothing more."""
        return self.matcher.is_stopped()
