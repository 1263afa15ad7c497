"""Guided decoding and the cross-request n-gram block in the serving core, on the tiny
random-weight model through the real transformers code: a random model writes JSON only if the
mask makes it, so valid JSON here is the mask's doing."""

from __future__ import annotations

import json

import pytest

from agents.llm.guided import GuideError, grammar_for
from agents.llm.transformers_backend import TransformersEngine
from agents.llm.types import GenerationRequest

OUTLINE_SCHEMA = {
    "type": "object",
    "properties": {"sections": {"type": "array", "minItems": 2, "maxItems": 3, "items": {
        "type": "object",
        "properties": {"heading": {"type": "string", "minLength": 3, "maxLength": 20},
                       "words": {"type": "integer", "minimum": 50, "maximum": 900}},
        "required": ["heading", "words"], "additionalProperties": False}}},
    "required": ["sections"], "additionalProperties": False,
}


def _ask(rid: str, schema: dict | None = None, tokens: int = 160, about: str = "", **extra) -> GenerationRequest:
    response_format = {"type": "json_schema", "json_schema": {"name": "outline", "schema": schema}} if schema else None
    return GenerationRequest(id=rid, max_new_tokens=tokens, response_format=response_format, messages=[
        {"role": "user", "content": f"Plan an article about lighthouses ({about or rid})."}], **extra)


@pytest.fixture
def engine(tiny_model_dir):
    engine = TransformersEngine(tiny_model_dir, dtype="float32", prefix_cache_tokens=0)
    yield engine
    engine.close()


def _answers(engine, requests) -> dict[str, tuple[str, str]]:
    text: dict[str, str] = {r.id: "" for r in requests}
    reasons: dict[str, str] = {}
    for delta in engine.stream(requests):
        text[delta.request_id] += delta.text
        if delta.finished:
            reasons[delta.request_id] = f"{delta.finish_reason} {delta.error}".strip()
    return {rid: (text[rid], reasons[rid]) for rid in text}


def test_guided_and_free_rows_in_one_batch(engine):
    requests = [_ask("guided-1", OUTLINE_SCHEMA), _ask("free-1", tokens=40), _ask("guided-2", OUTLINE_SCHEMA),
                _ask("free-2", tokens=40, temperature=0.8, seed=3)]
    answers = _answers(engine, requests)
    for rid in ("guided-1", "guided-2"):
        text, reason = answers[rid]
        assert reason == "stop", (rid, reason, text)  # the grammar ended it, not the token limit
        data = json.loads(text)
        assert 2 <= len(data["sections"]) <= 3, text
        for section in data["sections"]:
            assert set(section) == {"heading", "words"} and 3 <= len(section["heading"]) <= 20
            assert 50 <= section["words"] <= 900
    for rid in ("free-1", "free-2"):
        text, reason = answers[rid]
        assert reason == "length"  # the free rows ran on, unmasked (the tiny model never ends)
        with pytest.raises(ValueError):
            json.loads(text)
    # A free row writes what it writes alone: the guided rows beside it changed nothing.
    alone = _answers(engine, [_ask("free-1", tokens=40)])
    assert alone["free-1"][0] == answers["free-1"][0]


def test_a_regex_and_a_bad_schema(engine):
    regex = GenerationRequest(id="year", max_new_tokens=20, prompt="The year:",
                              response_format={"type": "regex", "regex": r"(19|20)\d\d"})
    broken = GenerationRequest(id="broken", max_new_tokens=20, prompt="x",
                               response_format={"type": "json_schema", "json_schema": {"schema": "not a schema"}})
    answers = _answers(engine, [regex, broken])
    assert answers["year"][1] == "stop" and len(answers["year"][0]) == 4 and answers["year"][0][:2] in ("19", "20")
    assert answers["broken"][1].startswith("error") and "schema" in answers["broken"][1]
    with pytest.raises(GuideError):
        grammar_for({"type": "xml"})


def test_rows_of_one_pool_do_not_repeat_each_others_ngrams(engine):
    """Two identical greedy prompts write the same text; in one n-gram pool the second may not
    complete any 3-gram the first wrote, and text given in `avoid` is blocked for both."""
    free = _answers(engine, [_ask("a", tokens=30, about="x"), _ask("b", tokens=30, about="x")])
    assert free["a"][0] == free["b"][0]  # the same prompt, greedy: the same text
    tokenizer = engine.tokenizer
    pooled = _answers(engine, [_ask("a", tokens=30, about="x", block_ngrams=3, ngram_pool="run-1"),
                               _ask("b", tokens=30, about="x", block_ngrams=3, ngram_pool="run-1")])
    a = tokenizer(pooled["a"][0], add_special_tokens=False).input_ids
    b = tokenizer(pooled["b"][0], add_special_tokens=False).input_ids

    def grams(ids):
        return {tuple(ids[i:i + 3]) for i in range(len(ids) - 2)}
    shared = grams(a) & grams(b)
    # Re-tokenising the text may merge tokens differently at a few places; the engine's own
    # tokens share none, so the texts share almost none.
    assert len(shared) <= 2, shared
    avoided = _answers(engine, [_ask("a", tokens=30, about="x", block_ngrams=3, avoid=(free["a"][0],))])
    c = tokenizer(avoided["a"][0], add_special_tokens=False).input_ids
    assert len(grams(c) & grams(tokenizer(free["a"][0], add_special_tokens=False).input_ids)) <= 2


def test_text_to_avoid_is_tokenized_once_per_pool():
    from agents.llm.sampling import NgramPool

    calls = []

    def tokenize(text):
        calls.append(text)
        return [ord(ch) for ch in text]

    pool = NgramPool(3)
    for _ in range(5):  # five writers of one run, each told the same sibling text
        pool.seed_text("abcdef", tokenize)
    assert calls == ["abcdef"]
    assert pool.banned("writer", [ord("a"), ord("b")]) == [ord("c")]


def test_a_grounded_row_follows_the_phrases_of_its_ground_text(engine):
    """A row whose last two tokens occur in its ground text has the token that follows them there
    favoured by `ground_bias`. The ground text here starts with the two tokens the row writes
    first anyway and goes on with other words: with a strong bias the row copies those words, a
    row beside it without ground writes what it writes alone, and the same ground with bias 0
    changes nothing."""
    tokenizer = engine.tokenizer
    free = _answers(engine, [_ask("a", tokens=24, about="x")])["a"][0]
    first = tokenizer(free, add_special_tokens=False).input_ids[:2]
    other = tokenizer(" sailors kept the lamps burning through every winter storm on the coast",
                      add_special_tokens=False).input_ids
    ground = (tokenizer.decode(first + other),)
    answers = _answers(engine, [_ask("a", tokens=len(other) + 2, about="x", ground=ground, ground_bias=20.0),
                                _ask("b", tokens=24, about="x"),
                                _ask("c", tokens=24, about="x", ground=ground, ground_bias=0.0)])
    assert answers["a"][0] == ground[0], answers["a"]
    assert answers["b"][0] == free and answers["c"][0] == free


def test_the_ground_index_and_its_limits():
    from agents.llm.sampling import Ground, check_sampling

    ground = Ground(("abcab", "abd"), lambda text: [ord(ch) for ch in text])
    assert sorted(ground.following([ord("x"), ord("a"), ord("b")]).tolist()) == [ord("c"), ord("d")]
    assert ground.following([ord("a")]) is None and ground.following([ord("b"), ord("b")]) is None
    for bad in (-1.0, float("nan"), 21.0):
        with pytest.raises(ValueError, match="ground_bias"):
            check_sampling(GenerationRequest(id="x", prompt="x", ground=("a",), ground_bias=bad))
