"""Speculative decoding: a smaller draft model (a distilled student) proposes tokens and the
served model verifies them in one pass. Greedy output must be exactly the served model's own."""

from __future__ import annotations

import pytest
from transformers import AutoModelForCausalLM, AutoTokenizer

from agents.llm.files import ModelFolderError
from agents.llm.transformers_backend import TransformersEngine
from agents.llm.types import AdapterSpec, GenerationRequest
from training.distill import kept_layers, make_student


@pytest.fixture(scope="module")
def student_dir(tiny_model_dir, tmp_path_factory):
    """A one-layer student of the two-layer tiny model, as distill.py initialises it."""
    teacher = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    folder = tmp_path_factory.mktemp("student")
    make_student(teacher, kept_layers(2, 1)).save_pretrained(folder)
    AutoTokenizer.from_pretrained(tiny_model_dir).save_pretrained(folder)
    return folder


def _text(engine, request):
    deltas = list(engine.stream([request]))
    return "".join(d.text for d in deltas), deltas[-1]


def _requests():
    chat = [{"role": "user", "content": "Write about the harbour at dawn."}]
    yield GenerationRequest(id="plain", messages=chat, max_new_tokens=40)
    yield GenerationRequest(id="penalty", messages=chat, max_new_tokens=40, repetition_penalty=1.3)
    yield GenerationRequest(id="stop", prompt="The gulls", max_new_tokens=40, stop=(" the",), min_new_tokens=5)
    yield GenerationRequest(id="draft", messages=chat, max_new_tokens=30, assistant_prefix="At dawn the")
    yield GenerationRequest(id="one-token-prompt", prompt="The", max_new_tokens=12)


@pytest.mark.parametrize("draft", ["student", "itself"])
def test_greedy_output_is_exactly_the_served_models(tiny_model_dir, student_dir, draft):
    plain = TransformersEngine(tiny_model_dir, dtype="float32")
    folder = student_dir if draft == "student" else tiny_model_dir
    fast = TransformersEngine(tiny_model_dir, dtype="float32", draft_model_path=folder, draft_tokens=3)
    for request in _requests():
        expected, expected_end = _text(plain, request)
        got, end = _text(fast, request)
        assert got == expected, request.id
        assert (end.finish_reason, end.completion_tokens) == (expected_end.finish_reason,
                                                               expected_end.completion_tokens)
        assert 0 <= end.timings["draft_acceptance"] <= 1
        if draft == "itself":  # a draft identical to the model is always right
            assert end.timings["draft_acceptance"] == 1.0


def test_the_draft_also_speeds_up_adapter_requests_and_leaves_batches_and_sampling_alone(
        tiny_model_dir, student_dir, tiny_adapters):
    plain = TransformersEngine(tiny_model_dir, dtype="float32")
    fast = TransformersEngine(tiny_model_dir, dtype="float32", draft_model_path=student_dir)
    adapter = AdapterSpec("writer@1", str(tiny_adapters["writer"]))
    request = GenerationRequest(id="a", prompt="Terns", max_new_tokens=20, adapter=adapter)
    assert _text(fast, request)[0] == _text(plain, request)[0]
    assert "draft_acceptance" in _text(fast, request)[1].timings
    sampled = GenerationRequest(id="s", prompt="Terns", max_new_tokens=8, temperature=0.8, seed=3)
    assert "draft_acceptance" not in _text(fast, sampled)[1].timings
    assert _text(fast, sampled)[0] == _text(plain, sampled)[0]
    # Requests that share the core decode as a batch (a lone row may speculate): same text.
    batch = [GenerationRequest(id=str(i), prompt=p, max_new_tokens=12) for i, p in enumerate(["Terns", "Gulls"])]
    assert _texts(fast, batch) == _texts(plain, batch)


def _texts(engine, requests):
    texts = {}
    for delta in engine.stream(requests):
        texts[delta.request_id] = texts.get(delta.request_id, "") + delta.text
    return texts


def test_cancel_stops_a_speculative_request(tiny_model_dir, student_dir):
    fast = TransformersEngine(tiny_model_dir, dtype="float32", draft_model_path=student_dir)
    calls = []

    def cancel(active):
        calls.append(active)
        return set(active) if len(calls) > 2 else set()

    deltas = list(fast.stream([GenerationRequest(id="c", prompt="Terns", max_new_tokens=200)], cancel=cancel))
    assert deltas[-1].finish_reason == "cancelled" and deltas[-1].completion_tokens < 200


def test_a_draft_with_another_tokenizer_is_refused(tiny_model_dir, student_dir, tmp_path):
    import json
    import shutil

    other = tmp_path / "other"
    shutil.copytree(student_dir, other)
    tokenizer = json.loads((other / "tokenizer.json").read_text())
    vocab = tokenizer["model"]["vocab"]
    vocab["zzz-extra-token"] = len(vocab)
    (other / "tokenizer.json").write_text(json.dumps(tokenizer))
    with pytest.raises(ModelFolderError, match="tokenizer differs"):
        TransformersEngine(tiny_model_dir, dtype="float32", draft_model_path=other)
