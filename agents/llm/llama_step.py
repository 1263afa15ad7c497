"""The serving core's own forward pass for Llama-family models, written for its slot cache.

transformers' forward is general: masks built and checked per call, attention chosen per layer
through an interface table, every projection a module call with its hooks, rotary embeddings
re-derived per layer's call, keys repeated per query head. On the bundled SmolLM2-135M a decode
step of one row dispatched ~7,500 operators, ~20 of its 64 ms outside the matrix products
(bench/step_profile.py). This forward calls the same modules' weights (float, prepacked or int8,
with their LoRA wrappers) in the fewest operators that compute the same thing:

- the rotary cos/sin once per pass (the model's own rotary module, so every RoPE variant it
  knows stays right), applied to queries and keys together;
- a decode step's single query per row attends over the kv heads directly, the query heads of a
  group as that head's query positions, so keys and values are never copied per query head;
- int8 weights that share an input (q, k, v; gate and up) run as one product each, a LoRA
  delta added to its part of the output (fbgemm's fixed cost per call is ~25 us, as much as a
  576 x 576 product's bytes);
- RMSNorm in four operators (torch's rms_norm on CPU dispatches eight and took twice as long).

Its greedy output is the eager forward's in float32 (tests/test_engine_at_the_machines_limit.py); the eager path
stays as the reference and the fallback for other architectures (`supports`).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from agents.llm.multi_lora import MultiLoraLinear
from agents.llm.quantization import Int8Linear

ARCHITECTURES = ("llama",)


def supports(model: Any) -> bool:
    config = getattr(model, "config", None)
    return (getattr(config, "model_type", None) in ARCHITECTURES and getattr(config, "hidden_act", "") == "silu"
            and not getattr(config, "mlp_bias", False) and hasattr(model, "model")
            and hasattr(model.model, "rotary_emb"))


def _call(module: nn.Module, x: torch.Tensor) -> torch.Tensor:
    return module.forward(x)  # no hooks: the serving core registers none, and skipping them saves a dispatch


def _fused(modules: list[Any]) -> Int8Linear | None:
    """One int8 product for several int8 Linears of the same input, or None."""
    if not all(isinstance(m, Int8Linear) and m.bias is None for m in modules):
        return None
    return Int8Linear(torch.cat([m.weight_int8 for m in modules]), torch.cat([m.scale for m in modules]))


class _Projections:
    """Linears that read the same input: (fused product or None, the attribute names, the widths)."""

    def __init__(self, owner: nn.Module, names: tuple[str, ...]):
        self.owner, self.names = owner, names
        modules = [getattr(owner, name) for name in names]
        self.widths = [m.out_features for m in modules]
        self.fused = _fused(modules)

    def __call__(self, x: torch.Tensor) -> list[torch.Tensor]:
        modules = [getattr(self.owner, name) for name in self.names]  # LoRA wrappers come and go
        if self.fused is None:
            return [_call(m, x) for m in modules]
        parts = list(self.fused.forward(x).split(self.widths, dim=-1))
        for i, module in enumerate(modules):
            if isinstance(module, MultiLoraLinear) and module.batch is not None:
                parts[i] = module.add_delta(parts[i], x)
        return parts


class LlamaStep:
    """`forward(input_ids, positions, mask, cache, keep)` with the runner's tensors: ids and
    positions [rows, length], the boolean mask the cache planned, logits of the last `keep`."""

    def __init__(self, model: Any):
        config = model.config
        self.model = model
        self.heads = config.num_attention_heads
        self.kv_heads = getattr(config, "num_key_value_heads", None) or self.heads
        self.head_dim = getattr(config, "head_dim", None) or config.hidden_size // self.heads
        self.groups = self.heads // self.kv_heads
        self.scale = self.head_dim ** -0.5
        self.eps = config.rms_norm_eps
        self.layers = [(_Projections(layer.self_attn, ("q_proj", "k_proj", "v_proj")),
                        _Projections(layer.mlp, ("gate_proj", "up_proj"))) for layer in model.model.layers]

    def _norm(self, x: torch.Tensor, norm: Any) -> torch.Tensor:
        """transformers' LlamaRMSNorm, operator for operator (the same rounding)."""
        if x.dtype == torch.float32:
            return norm.weight * (x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps))
        y = x.float()
        return norm.weight * (y * torch.rsqrt(y.pow(2).mean(-1, keepdim=True) + self.eps)).to(x.dtype)

    def forward(self, input_ids: torch.Tensor, positions: torch.Tensor, mask: torch.Tensor, cache, keep: int):
        inner = self.model.model
        rows, length = input_ids.shape
        h = inner.embed_tokens(input_ids)
        cos, sin = inner.rotary_emb(h, positions)  # [rows, length, head_dim]
        cos, sin = cos[:, None], sin[:, None]
        half = self.head_dim // 2
        for index, (layer, (qkv, gate_up)) in enumerate(zip(inner.layers, self.layers, strict=True)):
            attention = layer.self_attn
            x = self._norm(h, layer.input_layernorm)
            q, k, v = qkv(x)
            q = q.view(rows, length, self.heads, self.head_dim)
            k = k.view(rows, length, self.kv_heads, self.head_dim)
            v = v.view(rows, length, self.kv_heads, self.head_dim).transpose(1, 2)
            qk = torch.cat((q, k), dim=2).transpose(1, 2)  # [rows, heads + kv_heads, length, head_dim]
            rotated = torch.cat((-qk[..., half:], qk[..., :half]), dim=-1)
            qk = qk * cos + rotated * sin
            q, k = qk[:, :self.heads], qk[:, self.heads:]
            keys, values = cache.update(k, v, index)
            if length == 1:  # the group's query heads as one kv head's query positions
                out = F.scaled_dot_product_attention(
                    q.reshape(rows, self.kv_heads, self.groups, self.head_dim), keys, values,
                    attn_mask=mask, scale=self.scale)
                out = out.reshape(rows, 1, self.heads * self.head_dim)
            else:
                if self.groups > 1:
                    keys = keys.repeat_interleave(self.groups, dim=1)
                    values = values.repeat_interleave(self.groups, dim=1)
                out = F.scaled_dot_product_attention(q, keys, values, attn_mask=mask, scale=self.scale)
                out = out.transpose(1, 2).reshape(rows, length, self.heads * self.head_dim)
            h = h + _call(attention.o_proj, out)
            x = self._norm(h, layer.post_attention_layernorm)
            gate, up = gate_up(x)
            h = h + _call(layer.mlp.down_proj, F.silu(gate).mul_(up))
        h = self._norm(h[:, -keep:], inner.norm)
        return _call(self.model.lm_head, h)
