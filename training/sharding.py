"""How a recipe's model is spread over its processes (`--strategy`).

- `ddp`: every rank holds the whole model and its optimizer state; gradients are averaged over the
  ranks after the last micro-step of a step (DistributedDataParallel).
- `fsdp`: every decoder layer's parameters, the frozen base's too, are sharded over the ranks
  (`torch.distributed.fsdp.fully_shard`, then the rest of the model as the root): a rank holds
  1/N of the weights and of the optimizer's state and gathers a layer's weights only while it
  computes with it. Its gradients are reduce-scattered and averaged over the ranks as DDP's are,
  so the training loop's loss scaling gives the one-process gradient under both.

Checkpoints: under ddp rank 0 writes the trainable weights as the recipe saves them, and the
optimizer's state. Under fsdp (and the pipeline, training/pipeline.py, whose stages each write
their own parameters) every rank writes its part with `torch.distributed.checkpoint`
(the folder must be one every rank can reach: one machine, or a shared file system), which a
different number of ranks resumes, one process included; the trainable weights alone (a LoRA
recipe's frozen base is not written). The recipe's output is an ordinary folder either way:
under fsdp the full weights are gathered for rank 0 to write."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

from training.options import STRATEGIES

SHARDED = "sharded"  # the checkpoint's folder of an fsdp run (torch.distributed.checkpoint files)
DCP = ("fsdp", "pipeline")  # the strategies whose every rank writes its part of the checkpoint


def decoder_layers(model: torch.nn.Module) -> list[torch.nn.Module]:
    """The model's decoder layers (each sharded on its own), found by class name: a Llama-style
    model's, wrapped in a LoRA model or not."""
    return [module for module in model.modules() if type(module).__name__.endswith("DecoderLayer")]


class Wrapped:
    """The model as the training loop calls it, under a strategy; `sharded` under fsdp with
    several ranks (one process trains the plain model, and still checkpoints as fsdp does)."""

    def __init__(self, model: torch.nn.Module, dist, strategy: str):
        if strategy not in STRATEGIES:
            raise SystemExit(f"--strategy {strategy}: choose one of {', '.join(STRATEGIES)}")
        self.model, self.strategy = model, strategy
        self.sharded = strategy == "fsdp" and dist.enabled
        self.module: Any = model
        if self.sharded:
            from torch.distributed.fsdp import fully_shard

            for layer in decoder_layers(model):
                fully_shard(layer)
            fully_shard(model)  # in place: `model` is the sharded model from here on
        elif strategy == "ddp" and dist.enabled:
            from torch.nn.parallel import DistributedDataParallel

            self.module = DistributedDataParallel(
                model, device_ids=[dist.device.index] if dist.device.type == "cuda" else None)

    def clip(self, parameters: list[torch.nn.Parameter], max_norm: float) -> None:
        torch.nn.utils.clip_grad_norm_(parameters, max_norm)

    @contextlib.contextmanager
    def sync(self, on: bool) -> Iterator[None]:
        """Gradients averaged over the ranks after this micro-step's backward, or left to add up."""
        if self.sharded:
            self.model.set_requires_gradient_sync(on)  # type: ignore[operator]
            yield
        elif on or not isinstance(self.module, torch.nn.parallel.DistributedDataParallel):
            yield
        else:
            with self.module.no_sync():
                yield

    def held_bytes(self, optimizer: torch.optim.Optimizer) -> dict[str, int]:
        """What this rank holds of the parameters and of the optimizer's state."""
        def local(tensor: torch.Tensor) -> torch.Tensor:
            return tensor.to_local() if hasattr(tensor, "to_local") else tensor

        params = sum(local(p).numel() * p.element_size() for p in self.model.parameters())
        state = sum(local(value).numel() * value.element_size() for entry in optimizer.state.values()
                    for value in entry.values() if isinstance(value, torch.Tensor) and value.dim() > 0)
        return {"param_bytes": params, "optimizer_bytes": state}

    def full_state(self) -> dict[str, Any] | None:
        """Under fsdp, the whole model's weights gathered on rank 0 (every rank must call this;
        None on the others); None when the model is not sharded (its own state is whole)."""
        if not self.sharded:
            return None
        from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

        return get_model_state_dict(self.model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))


# --- checkpoints (fsdp and pipeline: every rank its part, under the full model's names) --------


def save_sharded(model: torch.nn.Module, folder: Path, optimizer: torch.optim.Optimizer) -> None:
    """Every rank writes its part of the trainable weights and of the optimizer's state."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import (
        StateDictOptions,
        get_model_state_dict,
        get_optimizer_state_dict,
    )

    # Flattened: the optimizer's state and settings keyed by parameter name, so ranks that hold
    # different parameters (pipeline stages) each write and read their own.
    options = StateDictOptions(ignore_frozen_params=True, flatten_optimizer_state_dict=True)
    dcp.save({"model": _trainable(model, get_model_state_dict(model, options=options)),
              "optimizer": get_optimizer_state_dict(model, optimizer, options=options)},
             checkpoint_id=str(folder / SHARDED))


def load_sharded(model: torch.nn.Module, folder: Path, optimizer: torch.optim.Optimizer) -> None:
    """Read what any number of ranks wrote into this rank's part."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import (
        StateDictOptions,
        get_model_state_dict,
        get_optimizer_state_dict,
        set_model_state_dict,
        set_optimizer_state_dict,
    )

    options = StateDictOptions(ignore_frozen_params=True, strict=False,  # the frozen weights are the base's
                               flatten_optimizer_state_dict=True)
    state: dict[str, Any] = {"model": _trainable(model, get_model_state_dict(model, options=options)),
                             "optimizer": get_optimizer_state_dict(model, optimizer, options=options)}
    dcp.load(state, checkpoint_id=str(folder / SHARDED))
    set_model_state_dict(model, state["model"], options=options)
    set_optimizer_state_dict(model, optimizer, state["optimizer"], options=options)


def _trainable(model: torch.nn.Module, state: dict[str, Any]) -> dict[str, Any]:
    """The state without frozen weights under any of their names (ignore_frozen_params misses a
    frozen weight's second name, such as a tied output head's)."""
    frozen = {name for name, p in model.named_parameters(remove_duplicate=False) if not p.requires_grad}
    return {name: value for name, value in state.items() if name not in frozen}
