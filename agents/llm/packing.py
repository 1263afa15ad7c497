"""Float32 linear layers with their weights reordered once, up front, into oneDNN's blocked
layout (CPU).

A plain float32 `F.linear` on CPU runs a product that is slow for the few rows of a decode step;
oneDNN's prepacked kernel is not. Measured on the bundled model in the serving core, 16 rows,
2 threads: 98 and 101 tokens/s plain, 143 and 118 prepacked (float32). In bfloat16 the same
packing measured slower in the core (161 and 147 vs 174 and 188 tokens/s), so bf16 weights stay
as they are.
"""

from __future__ import annotations

import torch
from torch import nn


def packing_available(device: str) -> bool:
    return (device == "cpu" and torch.backends.mkldnn.is_available()
            and hasattr(torch.ops.mkldnn, "_reorder_linear_weight"))


class PackedLinear(nn.Module):
    """Inference-only stand-in for nn.Linear with a prepacked weight (the plain one is dropped)."""

    def __init__(self, linear: nn.Linear, rows_hint: int):
        super().__init__()
        self.in_features, self.out_features = linear.in_features, linear.out_features
        weight = linear.weight.detach()
        self.dtype, self.device = weight.dtype, weight.device
        self.packed = torch.ops.mkldnn._reorder_linear_weight(weight, rows_hint)
        self.bias = None if linear.bias is None else linear.bias.detach()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shape = x.shape
        out = torch.ops.mkldnn._linear_pointwise(x.reshape(-1, shape[-1]).to(self.dtype), self.packed, self.bias,
                                                 "none", [], "")
        return out.reshape(*shape[:-1], self.out_features)


def pack_linears(model: nn.Module, rows_hint: int = 16) -> int:
    """Replace every float32 nn.Linear of `model` (output head included) by a PackedLinear;
    returns how many."""
    replaced = 0
    for _, module in list(model.named_modules()):
        for child_name, child in list(module.named_children()):
            if type(child) is nn.Linear and child.weight.dtype == torch.float32:
                setattr(module, child_name, PackedLinear(child, rows_hint))
                replaced += 1
    return replaced
