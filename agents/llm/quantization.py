"""int8 weights for CPU serving, and int8 model folders.

Every Linear but the MLP's down-projections (the output head too, as an untied copy: it is a
fifth of SmolLM2-135M's bytes) holds its weight in int8 with one scale per output channel and
runs as fbgemm's dynamic int8 product, the one int8 kernel that is fast on both AVX2 and AVX-512
machines (bench/RESULTS.md, issue 24: up to 4x faster than float32 at one row on an AVX2 EPYC,
where torch's weight-only int8 and int8 x int8 kernels run 10-60x slower than float32).

What costs perplexity is the activations' int8, not the weights': on SmolLM2-135M, every weight
in int8 with float activations changed held-out perplexity by -0.2%, int8 activations too by
+3.0%, and of that the down-projections' input (silu(gate) * up, whose few huge channels set
every row's step) was two thirds: with it in float, +0.9%. So the down-projections stay float
(`KEEP_FLOAT`; a quarter of the Linears' weights, so ~1.6x the bytes of all-int8 and still 0.4x
float32's), and the rest keep the perplexity close with two more things (bench/quality_gate.py):
- activations are quantized per row, not per batch: each row is divided by its own largest
  value before the product and multiplied back after, so one row's outliers do not coarsen
  another's and a row's output does not depend on what it is batched with;
- SmoothQuant's migration (alpha 0.7): a few input channels carry most of the activations'
  range, so each Linear's input channel j is divided by s_j and its weight column multiplied by
  s_j, with s_j = max|x_j|^a / max|W_:,j|^(1-a) measured on calibration text. The division is
  folded into what feeds the Linear (the RMSNorm's weight), so no operator is added.
On the quality gate's text (training/data/gate.txt, never tuned on) see bench/RESULTS.md.
LoRA deltas stay in float32 on top: an adapter's A is multiplied by the same s (its input is the
smoothed one) and B by the output scale an up-projection carries (multi_lora.py).

An int8 folder (written by `python -m training.quantize`, or once per model by a worker's first
int8 start: `cached_int8`) holds the model's config and tokenizer, model_int8.pt (plain tensors:
loaded with weights_only) and quantization.json; an engine asked for int8 on a float folder
quantizes in memory as it loads (~12 s of calibration and packing for SmolLM2-135M on one core).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import warnings
from pathlib import Path
from typing import Any

import torch
from torch import nn

INT8_WEIGHTS = "model_int8.pt"
INT8_CONFIG = "quantization.json"
METHOD = ("int8 per output channel, down-projections float, SmoothQuant alpha 0.7, activations per row, "
          "fbgemm dynamic")
ALPHA = 0.7
KEEP_FLOAT = ("down_proj",)  # Linears (by attribute name) whose int8 activations cost the most: left float
CALIBRATION = Path(__file__).resolve().parents[2] / "training" / "data" / "sources"


def int8_available() -> bool:
    return "fbgemm" in torch.backends.quantized.supported_engines or "x86" in torch.backends.quantized.supported_engines


class Int8Linear(nn.Module):
    """A Linear whose weight is int8 per output channel, prepacked for fbgemm."""

    def __init__(self, weight: torch.Tensor, scale: torch.Tensor, bias: torch.Tensor | None = None,
                 input_scale: torch.Tensor | None = None, output_scale: torch.Tensor | None = None):
        super().__init__()
        self.out_features, self.in_features = weight.shape
        self.device = weight.device
        self.weight_int8, self.scale, self.bias = weight, scale.float(), bias
        # What LoRA matrices are multiplied by to act on this layer's smoothed input and output.
        self.input_scale, self.output_scale = input_scale, output_scale
        quantized = torch._make_per_channel_quantized_tensor(weight, self.scale.double(),
                                                             torch.zeros(len(scale), dtype=torch.long), 0)
        self.packed = torch.ops.quantized.linear_prepack(quantized, bias)

    @classmethod
    def from_float(cls, weight: torch.Tensor, bias: torch.Tensor | None = None, **scales) -> Int8Linear:
        weight = weight.detach().float()
        scale = (weight.abs().amax(1) / 127).clamp_min(1e-12)
        quantized = torch.round(weight / scale[:, None]).clamp(-127, 127).to(torch.int8)
        return cls(quantized, scale, None if bias is None else bias.detach().float(), **scales)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shape = x.shape
        x = x.reshape(-1, shape[-1]).float()
        if x.shape[0] == 1:  # one row: the product's own per-tensor scale is the row's
            out = torch.ops.quantized.linear_dynamic(x, self.packed, True)
        else:
            peak = x.abs().amax(1, keepdim=True).clamp_min(1e-6)
            out = torch.ops.quantized.linear_dynamic(x / peak, self.packed, True)
            out = out.mul_(peak) if self.bias is None else (out - self.bias).mul_(peak).add_(self.bias)
        return out.reshape(*shape[:-1], self.out_features)

    def tensors(self) -> dict[str, torch.Tensor]:
        found = {"weight": self.weight_int8, "scale": self.scale, "bias": self.bias,
                 "input_scale": self.input_scale, "output_scale": self.output_scale}
        return {key: value for key, value in found.items() if value is not None}


def calibration_text(limit: int = 60_000) -> str:
    """Plain prose to measure activations on: the bundled research sources (not the held-out
    text the quality gate measures perplexity on)."""
    texts = [path.read_text(encoding="utf-8") for path in sorted(CALIBRATION.glob("*/*.md"))]
    return "\n\n".join(texts)[:limit]


def _input_peaks(model: Any, tokenizer, text: str, window: int = 256) -> dict[str, torch.Tensor]:
    """Each Linear's largest |input| per channel over `text`."""
    peaks: dict[str, torch.Tensor] = {}

    def hook(name):
        def record(module, inputs, output):
            seen = inputs[0].detach().abs().reshape(-1, inputs[0].shape[-1]).amax(0).float()
            peaks[name] = torch.maximum(peaks[name], seen) if name in peaks else seen
        return record

    handles = [module.register_forward_hook(hook(name)) for name, module in model.named_modules()
               if isinstance(module, nn.Linear)]
    ids = tokenizer(text, return_tensors="pt").input_ids.to(next(model.parameters()).device)
    try:
        with torch.inference_mode():
            for start in range(0, ids.shape[1], window):
                model(input_ids=ids[:, start:start + window])
    finally:
        for handle in handles:
            handle.remove()
    return peaks


def _smoothing_groups(model: Any) -> list[tuple[Any, list[str]]]:
    """(what feeds them, the Linears that share one input) for Llama-family models."""
    inner = getattr(model, "model", None)
    if getattr(model.config, "model_type", None) != "llama" or inner is None:
        return []
    groups = []
    for index, layer in enumerate(inner.layers):
        at = f"model.layers.{index}"
        groups += [(layer.input_layernorm, [f"{at}.self_attn.{n}" for n in ("q_proj", "k_proj", "v_proj")]),
                   (layer.post_attention_layernorm, [f"{at}.mlp.gate_proj", f"{at}.mlp.up_proj"]),
                   (layer.mlp.up_proj, [f"{at}.mlp.down_proj"])]
    return groups + [(inner.norm, ["lm_head"])]


def quantize_int8(model: Any, tokenizer=None, text: str | None = None, alpha: float = ALPHA,
                  keep_float: tuple[str, ...] = KEEP_FLOAT) -> Any:
    """Every Linear of `model` but those named in `keep_float` to Int8Linear, in place; smoothed
    first where the architecture is known and a tokenizer is given to calibrate with."""
    model.lm_head.weight = nn.Parameter(model.lm_head.weight.detach().clone())  # untie from the embeddings
    modules = dict(model.named_modules())
    scales: dict[str, dict[str, torch.Tensor]] = {}

    def quantized(name: str) -> bool:
        return isinstance(modules[name], nn.Linear) and name.rpartition(".")[2] not in keep_float

    groups = [(feeder, names) for feeder, names in (_smoothing_groups(model) if tokenizer is not None else [])
              if all(quantized(name) for name in names)]
    if groups:
        peaks = _input_peaks(model, tokenizer, text if text is not None else calibration_text())
        with torch.no_grad():
            for feeder, names in groups:
                weights = [modules[name].weight for name in names]
                column_peak = torch.stack([w.abs().amax(0) for w in weights]).amax(0).float().clamp_min(1e-5)
                s = (peaks[names[0]].clamp_min(1e-5) ** alpha / column_peak ** (1 - alpha)).clamp_min(1e-5)
                feeder.weight.div_(s[:, None] if isinstance(feeder, nn.Linear) else s)
                if isinstance(feeder, nn.Linear):
                    feeder_name = next(n for n, m in modules.items() if m is feeder)
                    scales.setdefault(feeder_name, {})["output_scale"] = 1 / s
                for name, weight in zip(names, weights, strict=True):
                    weight.mul_(s[None, :])
                    scales.setdefault(name, {})["input_scale"] = s
    for name, module in list(modules.items()):
        if isinstance(module, nn.Linear) and quantized(name):
            parent, _, child = name.rpartition(".")
            setattr(model.get_submodule(parent) if parent else model, child,
                    Int8Linear.from_float(module.weight, module.bias, **scales.get(name, {})))
    return model


def is_int8_folder(folder: str | Path) -> bool:
    return (Path(folder) / INT8_CONFIG).is_file()


def save_int8(model: Any, tokenizer, folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    model.config.save_pretrained(folder)
    if model.generation_config is not None:
        model.generation_config.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    linears = {name: module.tensors() for name, module in model.named_modules() if isinstance(module, Int8Linear)}
    # An Int8Linear's tensors are not in the state dict: what is there is the float rest.
    torch.save({"linears": linears, "floats": model.state_dict()}, folder / INT8_WEIGHTS)
    (folder / INT8_CONFIG).write_text(json.dumps({"method": METHOD, "alpha": ALPHA}, indent=2) + "\n")


def cached_int8(folder: str | Path, root: Path) -> Path:
    """An int8 folder of the float model in `folder`, made under `root` the first time and reused
    at every later start. Named by what it depends on (the folder, its weight files' sizes and
    times, the method, the calibration text), so a changed model or method makes a new one; two
    workers making it at once each write their own copy and the first rename wins."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder = Path(folder).resolve()
    files = sorted(p for p in folder.iterdir() if p.suffix in (".safetensors", ".bin", ".json"))
    stamp = [str(folder), METHOD, ALPHA, hashlib.sha256(calibration_text().encode()).hexdigest(),
             [(p.name, p.stat().st_size, p.stat().st_mtime_ns) for p in files]]
    target = root / hashlib.sha256(json.dumps(stamp).encode()).hexdigest()[:16]
    if is_int8_folder(target):
        return target
    tokenizer = AutoTokenizer.from_pretrained(folder)
    model = quantize_int8(AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval(), tokenizer)
    partial = root / f".{target.name}.{os.getpid()}"
    save_int8(model, tokenizer, partial)
    try:
        partial.rename(target)
    except OSError:  # another worker's copy landed first
        shutil.rmtree(partial, ignore_errors=True)
    return target


def load_int8(folder: str | Path) -> Any:
    """The model of an int8 folder: the architecture from its config, its float tensors (norms,
    embeddings, the Linears kept float) loaded, every other Linear an Int8Linear of the saved
    int8 weights."""
    from transformers import AutoConfig, AutoModelForCausalLM, GenerationConfig

    folder = Path(folder)
    if json.loads((folder / INT8_CONFIG).read_text()).get("method") != METHOD:
        raise ValueError(f"{folder}: made by an older int8 method; quantize the float model again")
    config = AutoConfig.from_pretrained(folder)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    saved = torch.load(folder / INT8_WEIGHTS, weights_only=True)
    model.lm_head.weight = nn.Parameter(model.lm_head.weight.detach().clone())
    missing, unexpected = model.load_state_dict(saved["floats"], strict=False)
    if unexpected or any(key.rpartition(".")[0] not in saved["linears"] for key in missing):
        raise ValueError(f"{folder}: {INT8_WEIGHTS} does not match the config ({unexpected or missing})")
    for name, tensors in saved["linears"].items():
        parent, _, child = name.rpartition(".")
        tensors = dict(tensors)
        setattr(model.get_submodule(parent) if parent else model, child,
                Int8Linear(tensors.pop("weight"), tensors.pop("scale"), **tensors))
    with contextlib.suppress(OSError):
        model.generation_config = GenerationConfig.from_pretrained(folder)
    return model.eval()
