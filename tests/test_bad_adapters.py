"""Issue 26: one bad adapter fails only its own requests. An adapter whose weights hold NaN or
infinity, or that belongs to another base model, is refused with its reason where it is
registered and where it is loaded; and in the serving core a row whose logits are not numbers
(weights finite, but out of range) fails alone while the rows decoded beside it go on."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from agents.llm.files import ModelFolderError, check_adapter_weights
from agents.llm.transformers_backend import TransformersEngine
from agents.llm.types import AdapterSpec, GenerationRequest


def _changed(source: Path, target: Path, change) -> Path:
    """A copy of an adapter folder with its tensors passed through `change(name, tensor)`."""
    target.mkdir(parents=True)
    for file in source.iterdir():
        if file.name != "adapter_model.safetensors":
            (target / file.name).write_bytes(file.read_bytes())
    tensors = load_file(str(source / "adapter_model.safetensors"))
    save_file({name: change(name, tensor) for name, tensor in tensors.items()},
              str(target / "adapter_model.safetensors"))
    return target


@pytest.fixture(scope="module")
def broken(tiny_model_dir, tiny_adapters, tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("broken")
    good = tiny_adapters["writer"]
    first = [True]

    def one_nan(name, tensor):
        if first[0] and "lora_B" in name:
            first[0] = False
            tensor = tensor.clone()
            tensor[0, 0] = float("nan")
        return tensor

    return {
        "nan": _changed(good, root / "nan", one_nan),
        "inf": _changed(good, root / "inf", lambda name, t: t * float("inf") if "lora_A" in name else t),
        "huge": _changed(good, root / "huge", lambda name, t: t * 1e30 if "lora_B" in name else t),  # finite
        "other": _changed(good, root / "other", lambda name, t: torch.zeros(t.shape[0] + 3, t.shape[1])
                          if "lora_B" in name else t),  # shapes of another model
    }


def test_weights_that_are_not_numbers_or_fit_another_model_are_refused_with_the_reason(tiny_model_dir, tiny_adapters,
                                                                                       broken):
    check_adapter_weights(tiny_adapters["writer"], tiny_model_dir)  # a good one passes
    for kind, reason in (("nan", "not finite numbers"), ("inf", "not finite numbers"),
                         ("other", "do not fit the base model")):
        with pytest.raises(ModelFolderError, match=reason):
            check_adapter_weights(broken[kind], tiny_model_dir)
    engine = TransformersEngine(tiny_model_dir, dtype="float32", max_rows=2)
    try:
        for kind in ("nan", "inf", "other"):
            with pytest.raises(ModelFolderError):
                engine.adapters.lora.load(kind, str(broken[kind]))
    finally:
        engine.close()


def test_registering_a_broken_adapter_is_refused(db, tiny_model_dir, broken):
    from webapp.registry import services as registry

    base = registry.base_model_register(name="tiny", path=str(tiny_model_dir))
    with pytest.raises(registry.RegistryError, match="not finite numbers"):
        registry.adapter_register(role="writer", path=str(broken["nan"]), base_model=base)
    with pytest.raises(registry.RegistryError, match="do not fit the base model"):
        registry.adapter_register(role="writer", path=str(broken["other"]), base_model=base)


def test_a_row_whose_logits_are_not_numbers_fails_alone(tiny_model_dir, broken):
    """The huge adapter's weights are finite, but its row's activations overflow to NaN."""
    engine = TransformersEngine(tiny_model_dir, dtype="float32", max_rows=2)

    def request(rid: str, adapter: AdapterSpec | None = None) -> GenerationRequest:
        return GenerationRequest(id=rid, max_new_tokens=12, temperature=0.0, adapter=adapter,
                                 messages=[{"role": "user", "content": "Write about terns."}])

    try:
        alone = {d.request_id: d for d in engine.stream([request("alone")])}
        text_alone = "".join(d.text for d in engine.stream([request("again")]))
        deltas = list(engine.stream([request("base"), request("huge", AdapterSpec("huge@1", str(broken["huge"])))]))
    finally:
        engine.close()
    assert alone
    finished = {d.request_id: d for d in deltas if d.finished}
    assert finished["huge"].finish_reason == "error" and "not a number" in finished["huge"].error
    assert finished["base"].finish_reason != "error"
    assert "".join(d.text for d in deltas if d.request_id == "base") == text_alone  # untouched by its neighbour
