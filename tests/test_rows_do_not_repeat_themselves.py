"""A row may not repeat its own n-grams (its draft included), stops after the sentences asked,
and reports how likely the model found what it wrote: what a writer's sentence search needs
from the engine. Through the real transformers code on the tiny model, and the bundled model
for sentences (a random model never ends one)."""

from __future__ import annotations

import pytest
import torch

from agents.llm.sampling import Sampler, new_state
from agents.llm.transformers_backend import TransformersEngine
from agents.llm.types import GenerationRequest, sentence_cut


@pytest.fixture(scope="module")
def engine(tiny_model_dir):
    engine = TransformersEngine(tiny_model_dir, dtype="float32")
    yield engine
    engine.close()


def _answer(engine, **extra) -> tuple[str, object]:
    request = GenerationRequest(id=extra.pop("id", "row"), max_new_tokens=extra.pop("tokens", 80),
                                messages=[{"role": "user", "content": "Tell me about tides."}], **extra)
    text, last = "", None
    for delta in engine.stream([request]):
        text += delta.text
        last = delta
    return text, last


def _grams(ids: list[int], n: int) -> list[tuple[int, ...]]:
    return [tuple(ids[i:i + n]) for i in range(len(ids) - n + 1)]


def _repeats(ids: list[int], n: int) -> int:
    grams = _grams(ids, n)
    return len(grams) - len(set(grams))


def test_a_token_that_would_repeat_the_rows_own_ngram_is_not_chosen(engine):
    """The sampler with logits that favour repeating: the favourite is refused where it would
    complete an n-gram of the draft or of the row's own tokens, and chosen where it would not."""
    tokenizer = engine.tokenizer
    sampler = Sampler(tokenizer, engine.eos_ids)
    draft = "The tide rises twice a day."
    request = GenerationRequest(id="r", no_repeat_ngrams=3, assistant_prefix=draft, messages=[])
    state = new_state(request, 0, tokenizer)
    ids = tokenizer(draft, add_special_tokens=False).input_ids
    vocab = len(tokenizer)

    def favouring(token: int) -> torch.Tensor:
        logits = torch.zeros(vocab)
        logits[token] = 10.0
        return logits

    # Write the draft's first two tokens again: the third would complete the draft's first 3-gram.
    for token in ids[:2]:
        assert sampler.pick(favouring(token), state) == token
        sampler.advance(state, token)
    assert sampler.pick(favouring(ids[2]), state) != ids[2]
    # A row without the option takes the favourite.
    free = new_state(GenerationRequest(id="f", assistant_prefix=draft, messages=[]), 0, tokenizer)
    for token in ids[:2]:
        sampler.advance(free, token)
    assert sampler.pick(favouring(ids[2]), free) == ids[2]


def test_a_row_through_the_engine_holds_no_repeated_ngram(engine):
    tokens: list[int] = []
    original = engine.core.sampler.advance

    def spy(state, token):
        if state.request.id == "blocked" and token not in engine.eos_ids:
            tokens.append(token)
        return original(state, token)

    engine.core.sampler.advance = spy
    try:
        _answer(engine, tokens=200, no_repeat_ngrams=2, id="blocked")
    finally:
        engine.core.sampler.advance = original
    assert len(tokens) == 200 and _repeats(tokens, 2) == 0


@pytest.mark.bundled
def test_a_writer_in_a_loop_cannot_write_its_sentence_again(bundled_engine):
    """The bundled model, shown a draft that repeats one sentence, writes it once more when let;
    with no_repeat_ngrams it cannot."""
    draft = "The moon pulls the sea. " * 4
    messages = [{"role": "user", "content": "Write about tides."}]
    looped = "".join(d.text for d in bundled_engine.stream([GenerationRequest(
        id="loop", messages=messages, assistant_prefix=draft.strip(), max_new_tokens=30)]))
    assert "The moon pulls the sea" in looped  # the loop the option must break
    blocked = "".join(d.text for d in bundled_engine.stream([GenerationRequest(
        id="noloop", messages=messages, assistant_prefix=draft.strip(), max_new_tokens=30, no_repeat_ngrams=4)]))
    assert "moon pulls the sea" not in blocked


def test_logprobs_are_the_models_own_for_the_tokens_written(engine):
    request = GenerationRequest(id="lp", max_new_tokens=12, logprobs=True,
                                messages=[{"role": "user", "content": "Tell me about tides."}])
    text, last = _answer(engine, tokens=12, logprobs=True, id="lp")
    assert last.logprob is not None and last.logprob < 0
    prompt = engine.prompt_ids(request)
    written = engine.tokenizer(text, add_special_tokens=False).input_ids[:12]
    with torch.no_grad():
        logits = engine.model(torch.tensor([prompt + written])).logits[0].float()
    expected = sum(float(torch.log_softmax(logits[len(prompt) - 1 + i], -1)[token]) for i, token in enumerate(written))
    assert last.logprob == pytest.approx(expected, rel=1e-3, abs=1e-3)
    _, plain = _answer(engine, tokens=12, id="plain")
    assert plain.logprob is None


def test_where_sentences_end():
    assert sentence_cut("The tide rose. It fell", 1) == len("The tide rose.")
    assert sentence_cut("The tide rose", 1) is None
    assert sentence_cut("It was 3.5 m high. Then", 1) == len("It was 3.5 m high.")  # no end inside a number
    assert sentence_cut('He said "go." Then', 1) == len('He said "go."')
    assert sentence_cut("It came first. It came second! Third", 2) == len("It came first. It came second!")
    assert sentence_cut("A short line\n\nNext", 1) == len("A short line")
    assert sentence_cut("1. Daily habits matter. Then", 1) == len("1. Daily habits matter.")  # no sentence in "1."


@pytest.mark.bundled
def test_a_row_asked_for_one_sentence_stops_after_it(bundled_engine):
    request = GenerationRequest(id="one", max_new_tokens=120, sentences=1, logprobs=True, messages=[
        {"role": "user", "content": "Write three sentences about how tides work."}])
    text, last = "", None
    for delta in bundled_engine.stream([request]):
        text += delta.text
        last = delta
    assert last.finish_reason == "stop" and last.completion_tokens < 120
    assert text.strip()[-1] in ".!?\"'”)" and sentence_cut(text.strip(), 1) in (None, len(text.strip()))
    assert last.logprob is not None and last.logprob < 0
