"""The transformers engine: batched decoding with per-request adapters, stop strings, limits,
on a tiny model built from the bundled tokenizer; and one real
generation from the bundled model itself."""

from __future__ import annotations

import shutil

import pytest

from agents.llm.files import ModelFolderError, folder_sha256
from agents.llm.transformers_backend import TransformersEngine
from agents.llm.types import AdapterSpec, GenerationRequest
from tests.support.streams import collect as _collect

BRIEF = ("You are a section writer for an article about coastal birds for walkers. "
         "Outline: 1 Gulls, 2 Terns, 3 Puffins, 4 Gannets. Keep to the plan. ") * 3


def _request(rid, question, **extra):
    return GenerationRequest(id=rid, messages=[{"role": "system", "content": BRIEF},
                                               {"role": "user", "content": question}], **extra)


@pytest.fixture(scope="module")
def engine(tiny_model_dir):
    return TransformersEngine(tiny_model_dir, dtype="float32")


@pytest.mark.bundled
def test_the_bundled_model_loads_from_the_installed_package_and_writes(bundled_engine):
    texts, ends = _collect(bundled_engine, [GenerationRequest(
        id="gulls", messages=[{"role": "user", "content": "Write one sentence about seagulls."}],
        max_new_tokens=30)])
    assert ends["gulls"].finish_reason in ("stop", "length")
    words = texts["gulls"].split()
    assert len(words) >= 4, texts
    assert any(word.lower().strip(".,") in {"gull", "gulls", "seagull", "seagulls", "birds", "bird"} for word in words)


def test_each_request_in_a_mixed_adapter_batch_matches_running_it_alone(tiny_model_dir, tiny_adapters):
    engine = TransformersEngine(tiny_model_dir, dtype="float32")
    writer = AdapterSpec("writer@1", str(tiny_adapters["writer"]))
    reviewer = AdapterSpec("reviewer@1", str(tiny_adapters["reviewer"]))
    batch = [
        _request("base", "Write about gulls.", max_new_tokens=12),
        _request("w1", "Write about terns.", adapter=writer, max_new_tokens=12),
        _request("r1", "Review the gull section.", adapter=reviewer, max_new_tokens=12),
        _request("w2", "Write about puffins and their burrows.", adapter=writer, max_new_tokens=9),
    ]
    together, _ = _collect(engine, batch)
    alone = {r.id: _collect(engine, [r])[0][r.id] for r in batch}
    assert together == alone
    # The adapters really change the output: the same prompt differs by adapter.
    same_prompt = [_request(name, "Write about gulls.", adapter=spec, max_new_tokens=12)
                   for name, spec in (("b", None), ("w", writer), ("r", reviewer))]
    outputs = _collect(engine, same_prompt)[0]
    assert len(set(outputs.values())) == 3


def test_limits_are_per_request_and_short_ones_finish_first(engine):
    batch = [_request("short", "Gulls", max_new_tokens=3), _request("long", "Gulls", max_new_tokens=15)]
    order = []
    for delta in engine.stream(batch):
        if delta.finished:
            order.append((delta.request_id, delta.finish_reason, delta.completion_tokens))
    assert order == [("short", "length", 3), ("long", "length", 15)]


def test_stop_strings_cut_the_text_before_the_stop(engine):
    free = _collect(engine, [_request("x", "Terns", max_new_tokens=30)])[0]["x"]
    start = next(i for i in range(len(free) // 3, len(free) - 2) if free[i:i + 3].strip() == free[i:i + 3])
    stop = free[start:start + 3]
    texts, ends = _collect(engine, [_request("x", "Terns", max_new_tokens=30, stop=(stop,)),
                                    _request("y", "Terns", max_new_tokens=30)])
    assert ends["x"].finish_reason == "stop"
    assert texts["x"] == free[:free.index(stop)]
    assert texts["y"] == free  # the other request is untouched by x's stop string


def test_sampling_is_repeatable_for_a_seed(engine):
    def sample(seed):
        return _collect(engine, [_request("s", "Gulls", max_new_tokens=12, temperature=1.0, top_p=0.9,
                                          seed=seed)])[0]["s"]

    assert sample(7) == sample(7)
    assert sample(7) != sample(8)


def test_a_corrupt_adapter_fails_only_its_requests(tiny_model_dir, tiny_adapters, tmp_path):
    engine = TransformersEngine(tiny_model_dir, dtype="float32")
    broken = tmp_path / "broken"
    shutil.copytree(tiny_adapters["writer"], broken)
    (broken / "adapter_model.safetensors").write_bytes(b"not a safetensors file")
    good = AdapterSpec("reviewer@1", str(tiny_adapters["reviewer"]), sha256=folder_sha256(tiny_adapters["reviewer"]))
    tampered = AdapterSpec("writer@9", str(tiny_adapters["writer"]), sha256="0" * 64)
    texts, ends = _collect(engine, [
        _request("bad-file", "Gulls", adapter=AdapterSpec("broken@1", str(broken)), max_new_tokens=5),
        _request("bad-sum", "Gulls", adapter=tampered, max_new_tokens=5),
        _request("wrong-base", "Gulls", adapter=AdapterSpec("x@1", str(tiny_adapters["writer"]),
                                                             base_model="some-other-model"), max_new_tokens=5),
        _request("missing", "Gulls", adapter=AdapterSpec("gone@1", str(tmp_path / "nowhere")), max_new_tokens=5),
        _request("fine", "Gulls", adapter=good, max_new_tokens=5),
    ])
    assert ends["bad-file"].finish_reason == "error" and str(broken) in ends["bad-file"].error
    assert "checksum mismatch" in ends["bad-sum"].error
    assert "was trained on 'some-other-model'" in ends["wrong-base"].error
    assert "no such adapter folder" in ends["missing"].error
    assert ends["fine"].finish_reason == "length" and len(texts["fine"]) > 0
    assert engine.loaded_adapters() == ["reviewer@1"]
    # The broken load left nothing behind: the good adapter's output is what it is alone.
    clean = TransformersEngine(tiny_model_dir, dtype="float32")
    assert texts["fine"] == _collect(clean, [_request("fine", "Gulls", adapter=good, max_new_tokens=5)])[0]["fine"]
    # And the engine keeps serving afterwards.
    assert _collect(engine, [_request("after", "Gulls", max_new_tokens=4)])[1]["after"].finish_reason == "length"


def test_adapters_beyond_the_cache_size_are_evicted(tiny_model_dir, tiny_adapters):
    engine = TransformersEngine(tiny_model_dir, dtype="float32", max_adapters=1)
    for name in ("writer", "reviewer"):
        spec = AdapterSpec(f"{name}@1", str(tiny_adapters[name]))
        _collect(engine, [_request(name, "Gulls", adapter=spec, max_new_tokens=2)])
    assert engine.loaded_adapters() == ["reviewer@1"]


def test_a_missing_or_broken_model_folder_names_the_path(tmp_path):
    with pytest.raises(ModelFolderError, match=str(tmp_path / "none")):
        TransformersEngine(tmp_path / "none")
    (tmp_path / "half").mkdir()
    (tmp_path / "half" / "config.json").write_text("{}")
    with pytest.raises(ModelFolderError, match="no weights"):
        TransformersEngine(tmp_path / "half")


def test_bfloat16_and_int8_engines_generate(tiny_model_dir):
    for options in ({"dtype": "bfloat16"}, {"int8": True}):
        engine = TransformersEngine(tiny_model_dir, **options)
        texts, ends = _collect(engine, [_request("a", "Gulls", max_new_tokens=6)])
        assert ends["a"].completion_tokens == 6 and texts["a"]


def test_adapters_are_applied_exactly_as_peft_applies_them(tiny_model_dir, tiny_adapters):
    """Our stacked per-row LoRA must give the tokens peft's own model gives, greedy, float32."""
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    engine = TransformersEngine(tiny_model_dir, dtype="float32")
    request = _request("w", "Write about terns.", max_new_tokens=10,
                       adapter=AdapterSpec("writer@1", str(tiny_adapters["writer"])))
    ids = engine.prompt_ids(request)
    ours = _collect(engine, [request])[0]["w"]

    reference = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_model_dir),
                                          str(tiny_adapters["writer"])).eval()
    with torch.inference_mode():
        generated = reference.generate(input_ids=torch.tensor([ids]), max_new_tokens=10, do_sample=False)
    assert ours == engine.tokenizer.decode(generated[0, len(ids):], skip_special_tokens=True)


def test_an_int8_engine_reads_every_product_in_int8_the_output_head_too(tiny_model_dir):
    """The head is a fifth of SmolLM2-135M's bytes a step: it used to stay float32, tied to the
    embeddings. Now it is an int8 copy; the embeddings stay float for the lookup, and the only
    float Linears left are the down-projections (their int8 activations cost the most perplexity)."""
    from torch import nn

    from agents.llm.quantization import Int8Linear

    engine = TransformersEngine(tiny_model_dir, int8=True)
    model = engine.model
    assert isinstance(model.lm_head, Int8Linear)
    assert {name.rpartition(".")[2] for name, module in model.named_modules()
            if isinstance(module, nn.Linear)} == {"down_proj"}
