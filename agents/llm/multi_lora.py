"""Many LoRA adapters over one base model, applied per row of a batch.

Adapters are peft adapters: peft's config class reads adapter_config.json and peft's loader reads
the weights. What differs is how a mixed batch runs. peft's `adapter_names` path loops over the
adapters in every LoRA layer, gathering and scattering sub-batches; on CPU that made a batch of
8 requests over 4 adapters 2.4x slower than the base model alone (bench/engine.py). Here each
wrapped Linear holds, for the current batch, every row's A and B matrices stacked, and applies
them with two batched matmuls: y = W x + B_row (A_row x), rows without an adapter using zeros.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import torch
from torch import nn

from agents.llm.files import ModelFolderError
from agents.llm.packing import PackedLinear
from agents.llm.quantization import Int8Linear


@dataclass
class LoraWeights:
    """One adapter's matrices for one Linear, with the scaling folded into B."""

    a: torch.Tensor  # [rank, in_features], float32
    b: torch.Tensor  # [out_features, rank] * scaling, float32


class MultiLoraLinear(nn.Module):
    def __init__(self, base: nn.Linear | PackedLinear | Int8Linear):
        super().__init__()
        self.base = base
        self.adapters: dict[str, LoraWeights] = {}
        # Set per batch by MultiLora.prepare(): A [rows, in, rank] and B [rows, rank, out], or None.
        self.batch: tuple[torch.Tensor, torch.Tensor] | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.base(x)
        if self.batch is None:
            return out
        return self.add_delta(out, x)

    def add_delta(self, out: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """out + each row's B (A x): `out` is this layer's base output for input x [rows, length, in]."""
        assert self.batch is not None
        batch_a, batch_b = self.batch
        # The low-rank matrices are kept in float32: on CPU a small bf16 bmm takes twice as long
        # as converting to float32 and back (measured: 61 vs 26 microseconds per layer).
        if out.dtype == torch.float32:
            return torch.baddbmm(out, torch.bmm(x, batch_a), batch_b)
        return out + torch.bmm(torch.bmm(x.float(), batch_a), batch_b).to(out.dtype)


class MultiLora:
    """The set of adapters loaded into one model, and the per-batch plan of which row uses which."""

    def __init__(self, model: nn.Module):
        self.model = model
        self.layers: dict[str, MultiLoraLinear] = {}
        self.adapters: dict[str, list[str]] = {}  # adapter name -> wrapped module names

    def load(self, name: str, path: str) -> None:
        from peft import LoraConfig
        from peft.utils import load_peft_weights

        try:
            config = LoraConfig.from_pretrained(path)
            weights = load_peft_weights(path, device="cpu")
        except Exception as error:  # noqa: BLE001  (peft raises many kinds; all mean "unreadable")
            raise ModelFolderError(f"{path}: the adapter could not be read ({error})") from error
        unsupported = [flag for flag in ("use_dora", "modules_to_save", "layer_replication")
                       if getattr(config, flag, None)]
        if unsupported or getattr(config, "bias", "none") != "none":
            raise ModelFolderError(f"{path}: unsupported LoRA options for serving: {unsupported or ['bias']}")
        pairs: dict[str, dict[str, torch.Tensor]] = {}
        for key, tensor in weights.items():
            match = re.fullmatch(r"(?:base_model\.model\.)?(.+)\.lora_([AB])\.weight", key)
            if match is None:
                raise ModelFolderError(f"{path}: unexpected tensor {key!r} in the adapter")
            pairs.setdefault(match.group(1), {})[match.group(2)] = tensor
        modules = dict(self.model.named_modules())
        loaded: dict[str, LoraWeights] = {}
        for module_name, pair in pairs.items():
            target = modules.get(module_name)
            if isinstance(target, MultiLoraLinear):
                target = target.base
            if not isinstance(target, nn.Linear | PackedLinear | Int8Linear) or set(pair) != {"A", "B"}:
                raise ModelFolderError(f"{path}: {module_name} is not a Linear layer of this model")
            a, b = pair["A"], pair["B"]
            if not bool(torch.isfinite(a).all() and torch.isfinite(b).all()):
                raise ModelFolderError(f"{path}: {module_name} holds values that are not finite numbers (NaN or "
                                       "infinity)")
            rank = a.shape[0]
            if a.shape[1] != target.in_features or b.shape != (target.out_features, rank):
                raise ModelFolderError(f"{path}: {module_name} has shapes {tuple(a.shape)}/{tuple(b.shape)}, "
                                       f"which do not fit this model's {target.in_features}->{target.out_features}")
            alpha = config.alpha_pattern.get(module_name.split(".")[-1], config.lora_alpha)
            rank_for_scale = config.rank_pattern.get(module_name.split(".")[-1], config.r)
            scaling = alpha / (rank_for_scale ** 0.5 if config.use_rslora else rank_for_scale)
            device = target.weight.device if isinstance(target, nn.Linear) else target.device
            a, b = a.float().to(device), (b * scaling).float().to(device)
            if isinstance(target, Int8Linear):  # act on the smoothed input, give the smoothed output
                a = a * target.input_scale[None, :] if target.input_scale is not None else a
                b = b * target.output_scale[:, None] if target.output_scale is not None else b
            loaded[module_name] = LoraWeights(a, b)
        if not loaded:
            raise ModelFolderError(f"{path}: the adapter has no LoRA weights")
        for module_name, lora in loaded.items():
            self._wrap(module_name).adapters[name] = lora
        self.adapters[name] = list(loaded)

    def _wrap(self, module_name: str) -> MultiLoraLinear:
        if module_name not in self.layers:
            parent_name, _, child = module_name.rpartition(".")
            parent = self.model.get_submodule(parent_name)
            wrapped = MultiLoraLinear(getattr(parent, child))
            setattr(parent, child, wrapped)
            self.layers[module_name] = wrapped
        return self.layers[module_name]

    def unload(self, name: str) -> None:
        for module_name in self.adapters.pop(name, []):
            self.layers[module_name].adapters.pop(name, None)

    def prepare(self, row_adapters: list[str | None]) -> None:
        """Stack each row's matrices in every wrapped layer for the batch about to run."""
        used = {name for name in row_adapters if name is not None}
        for layer in self.layers.values():
            if not used.intersection(layer.adapters):
                layer.batch = None
                continue
            rank = max(layer.adapters[name].a.shape[0] for name in used if name in layer.adapters)
            some = next(iter(layer.adapters.values()))
            zeros_a = some.a.new_zeros(rank, layer.base.in_features)
            zeros_b = some.b.new_zeros(layer.base.out_features, rank)
            a_rows, b_rows = [], []
            for name in row_adapters:
                lora = layer.adapters.get(name) if name is not None else None
                a, b = (lora.a, lora.b) if lora is not None else (zeros_a, zeros_b)
                if a.shape[0] < rank:  # pad smaller ranks with zeros
                    a = torch.cat([a, a.new_zeros(rank - a.shape[0], a.shape[1])])
                    b = torch.cat([b, b.new_zeros(b.shape[0], rank - b.shape[1])], dim=1)
                a_rows.append(a.t())
                b_rows.append(b.t())
            layer.batch = (torch.stack(a_rows), torch.stack(b_rows))

    def keep_rows(self, rows: torch.Tensor) -> None:
        for layer in self.layers.values():
            if layer.batch is not None:
                layer.batch = (layer.batch[0][rows], layer.batch[1][rows])

    def clear(self) -> None:
        for layer in self.layers.values():
            layer.batch = None
