"""int8 weights for CPU serving, and int8 model folders.

torch's dynamic quantization: Linear weights in int8 with one scale per output channel,
activations quantized on the fly. The MLP output projections (down_proj) stay in float: their
inputs carry outliers, and quantizing them tripled the perplexity of SmolLM2-135M (36 -> 115)
where leaving them out costs 36 -> 41 (bench/engine.py).

An int8 folder (written by `python -m training.quantize`) holds the model's config and tokenizer,
model_int8.pt (the quantized state dict) and quantization.json; the engine loads it as it is.
"""

from __future__ import annotations

import contextlib
import json
import warnings
from pathlib import Path

import torch

INT8_WEIGHTS = "model_int8.pt"
INT8_CONFIG = "quantization.json"
SKIPPED = ("down_proj",)


def quantize_int8(model, skip: tuple[str, ...] = SKIPPED):
    from torch.ao.quantization import per_channel_dynamic_qconfig, quantize_dynamic

    layers = {name: per_channel_dynamic_qconfig for name, module in model.model.named_modules()
              if isinstance(module, torch.nn.Linear) and not name.endswith(skip)}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch marks torch.ao.quantization deprecated; it still works
        # In place: a copy of model.model would untie the output head from the embeddings (twice the size).
        quantize_dynamic(model.model, layers, dtype=torch.qint8, inplace=True)
    return model


def is_int8_folder(folder: str | Path) -> bool:
    return (Path(folder) / INT8_CONFIG).is_file()


def save_int8(model, tokenizer, folder: Path, skip: tuple[str, ...] = SKIPPED) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    model.config.save_pretrained(folder)
    if model.generation_config is not None:
        model.generation_config.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    torch.save(model.state_dict(), folder / INT8_WEIGHTS)
    (folder / INT8_CONFIG).write_text(json.dumps({"method": "torch dynamic int8, per channel",
                                                  "float_layers": list(skip)}, indent=2) + "\n")


def load_int8(folder: str | Path):
    """The model of an int8 folder: the float architecture from its config, quantized the same
    way, then the saved int8 weights loaded into it."""
    from transformers import AutoConfig, AutoModelForCausalLM, GenerationConfig

    folder = Path(folder)
    skip = tuple(json.loads((folder / INT8_CONFIG).read_text()).get("float_layers", SKIPPED))
    config = AutoConfig.from_pretrained(folder)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    quantize_int8(model, skip)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch warns about its own TypedStorage inside packed int8 weights
        state = torch.load(folder / INT8_WEIGHTS, weights_only=False)
    model.load_state_dict(state, strict=True)
    with contextlib.suppress(OSError):
        model.generation_config = GenerationConfig.from_pretrained(folder)
    return model.eval()
