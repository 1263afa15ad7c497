"""Pipeline model parallel (`--strategy pipeline`): consecutive decoder layers on consecutive
ranks, so a model larger than one device trains across several (one machine or several; gloo
on CPU, NCCL on GPUs).

Rank r keeps only its stage (the embeddings on the first, the final norm and head on the last,
its share of the decoder layers on each) and frees the rest of the model; every rank sees the
whole global batch, cut into micro-batches that flow through the stages under a GPipe schedule
(`torch.distributed.pipelining`): all forwards, then all backwards. The last stage computes
each micro-batch's summed token loss divided by the global batch's target count, gradients add
up over the micro-batches (no 1/n scaling), and so each rank's gradient is the one-process
gradient of its parameters. Clipping uses the norm over every rank's gradients, and a tied
input embedding and output head (the first and the last stage each hold a copy) add their
gradients, so both copies take the same step.

Activations have fixed shapes between stages: every batch is padded to --max-length.

Checkpoints are written by every rank with torch.distributed.checkpoint under the model's full
parameter names (as fsdp's are), so one rank, two ranks or another strategy's run resumes them.
The output is an ordinary folder: rank 0 gathers every stage's weights to write it."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
import torch.distributed as torch_dist

from training.dataset import IGNORE, Example, collate, lm_loss, step_batches


def stage_layers(layers: int, stages: int, stage: int) -> range:
    """The decoder layers of `stage`: consecutive, as even as they can be, earlier stages first."""
    if layers < stages:
        raise SystemExit(f"--strategy pipeline: {stages} stages need at least {stages} decoder layers "
                         f"(the model has {layers})")
    size, extra = divmod(layers, stages)
    start = stage * size + min(stage, extra)
    return range(start, start + size + (stage < extra))


def _parts(model: torch.nn.Module) -> tuple[Any, Any]:
    """(the decoder stack, the causal LM around it), through a LoRA wrapper if there is one."""
    lm: Any = model.get_base_model() if hasattr(model, "get_base_model") else model  # type: ignore[operator]
    return lm.model, lm


class Stage(torch.nn.Module):
    """This rank's part of the model, from token ids or hidden states to hidden states or logits."""

    def __init__(self, model: torch.nn.Module, layers: range, first: bool, last: bool):
        super().__init__()
        decoder, lm = _parts(model)
        self.config = lm.config
        self.embed = decoder.embed_tokens if first else None
        self.rotary = decoder.rotary_emb
        self.blocks = torch.nn.ModuleList([decoder.layers[i] for i in layers])
        self.norm: Any = decoder.norm if last else None
        self.head: Any = lm.lm_head if last else None

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        from transformers.masking_utils import create_causal_mask

        hidden = self.embed(inputs) if self.embed is not None else inputs
        positions = torch.arange(hidden.shape[1], device=hidden.device).unsqueeze(0)
        mask = create_causal_mask(config=self.config, inputs_embeds=hidden, attention_mask=None,
                                  past_key_values=None, position_ids=positions)
        rope = self.rotary(hidden, positions)
        for block in self.blocks:
            hidden = block(hidden, attention_mask=mask, position_embeddings=rope, position_ids=positions)
        return self.head(self.norm(hidden)) if self.head is not None else hidden


def _free_all_but(model: torch.nn.Module, layers: range, first: bool, last: bool) -> None:
    """Drop what other stages hold (placeholders keep the parameter names of what stays)."""
    decoder, lm = _parts(model)
    for index in range(len(decoder.layers)):
        if index not in layers:
            decoder.layers[index] = torch.nn.Module()
    tied = lm.lm_head.weight is decoder.embed_tokens.weight
    if not first:
        decoder.embed_tokens = torch.nn.Module()
    if not last:
        decoder.norm, lm.lm_head = torch.nn.Module(), torch.nn.Module()
    if tied and last and not first:
        lm.lm_head.weight = torch.nn.Parameter(lm.lm_head.weight.detach().clone(),
                                               requires_grad=lm.lm_head.weight.requires_grad)


class AdapterWeights(dict):
    """A LoRA adapter's weights from every stage, named as in its adapter_model.safetensors (peft
    keeps only the modules its model still has when it saves, so they are written as they are)."""


class Pipelined:
    """The model under `--strategy pipeline` with several ranks: the training loop's view of it
    (`train_step`, `clip`, `evaluate`), its per-rank footprint and the gathered output (its
    checkpoints: sharding.save_sharded and load_sharded, by parameter name)."""

    strategy = "pipeline"

    def __init__(self, model: torch.nn.Module, dist, micro_batch: int, width: int):
        from torch.distributed.pipelining import PipelineStage

        decoder, lm = _parts(model)
        self.model, self.dist, self.micro_batch, self.width = model, dist, micro_batch, width
        stages, rank = dist.world_size, dist.rank
        self.first, self.last = rank == 0, rank == stages - 1
        self.tied = stages > 1 and lm.config.tie_word_embeddings and lm.lm_head.weight is decoder.embed_tokens.weight
        layers = stage_layers(len(decoder.layers), stages, rank)
        self.stage_module = Stage(model, layers, self.first, self.last)
        _free_all_but(model, layers, self.first, self.last)
        self.stage = PipelineStage(self.stage_module, rank, stages, dist.device)
        self.tied_group = torch_dist.new_group([0, stages - 1]) if self.tied else None
        self._schedules: dict[int, Any] = {}
        self._batch: dict[str, torch.Tensor] = {}
        self._loss_fn: Callable | None = None

    # --- the loop ------------------------------------------------------------------------------

    def _schedule(self, rows: int):
        from torch.distributed.pipelining import ScheduleGPipe

        if rows not in self._schedules:
            self._schedules[rows] = ScheduleGPipe(self.stage, rows // self.micro_batch, loss_fn=self._chunk_loss,
                                                  scale_grads=False)
        return self._schedules[rows]

    def _chunk_loss(self, logits: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
        """The last stage's loss of one micro-batch (`rows` of the batch in flight)."""
        assert self._loss_fn is not None
        return self._loss_fn(logits, {key: value[rows] for key, value in self._batch.items()})

    def run(self, examples: list[Example], pad_id: int, loss_fn: Callable, train: bool) -> float:
        """One pass of `examples` through the stages (forward and backward when `train`): the sum
        of loss_fn over its micro-batches, the same on every rank."""
        batch = collate(examples, pad_id, self.dist.device, width=self.width)
        self._batch, self._loss_fn = batch, loss_fn
        rows = torch.arange(len(examples), device=self.dist.device)
        schedule = self._schedule(len(examples))
        losses: list[torch.Tensor] = []
        inputs = (batch["input_ids"],) if self.first else ()
        target = {"target": rows, "losses": losses} if self.last else {}
        if train:
            schedule.step(*inputs, **target)
        else:
            schedule.eval(*inputs, **target)
        summed = float(sum(loss.detach() for loss in losses)) if self.last else 0.0
        return self.dist.all_sum([summed])[0]

    def train_step(self, examples: list[Example], args, step: int, pad_id: int, loss_fn) -> tuple[float, int]:
        """One optimizer step's passes: the whole global batch, micro-batch by micro-batch, with
        each loss divided by the batch's targets as data parallel's are (common._step). The step's
        mean token loss, and the tokens this rank computed (its layers', of every example)."""
        chosen = [examples[i] for i in step_batches(len(examples), args.batch_size, args.seed, step)]
        targets = max(1, sum(e.targets for e in chosen))
        loss = self.run(chosen, pad_id, lambda logits, batch: loss_fn.of(logits, batch) / targets, train=True)
        self._after_backward()
        return loss, sum(len(e.input_ids) for e in chosen)

    def evaluate(self, examples: list[Example], pad_id: int) -> dict[str, float]:
        """dataset.evaluate through the stages: mean token loss and perplexity."""
        self.model.eval()
        with torch.no_grad():
            total, count = mean_loss(self, examples, pad_id, lm_loss.of)
        self.model.train()
        if not count:
            return {"loss": float("nan"), "perplexity": float("nan"), "tokens": 0}
        mean = total / count
        return {"loss": round(mean, 5), "perplexity": round(math.exp(min(mean, 50)), 4), "tokens": int(count)}

    def _after_backward(self) -> None:
        """The tied embedding's and head's gradients added, so both copies step alike."""
        if self.tied_group is None or not (self.first or self.last):
            return
        decoder, lm = _parts(self.model)
        weight = decoder.embed_tokens.weight if self.first else lm.lm_head.weight
        if not weight.requires_grad:  # frozen (a LoRA recipe's base): nothing to add
            return
        if weight.grad is None:
            weight.grad = torch.zeros_like(weight)
        torch_dist.all_reduce(weight.grad, group=self.tied_group)

    def clip(self, parameters: list[torch.nn.Parameter], max_norm: float) -> None:
        """clip_grad_norm_ over the whole model's gradients (the tied copy counted once)."""
        grads = [p.grad for p in parameters if p.grad is not None]
        if self.tied and self.last and not self.first:
            head = _parts(self.model)[1].lm_head.weight
            local = [g for p, g in ((p, p.grad) for p in parameters if p.grad is not None) if p is not head]
        else:
            local = grads
        squared = sum(float(g.detach().float().pow(2).sum()) for g in local)
        norm = math.sqrt(self.dist.all_sum([squared])[0])
        scale = max_norm / (norm + 1e-6)
        if scale < 1.0:
            for grad in grads:
                grad.mul_(scale)

    # --- what it holds, and its files ----------------------------------------------------------

    def held_bytes(self, optimizer: torch.optim.Optimizer) -> dict[str, int]:
        """What this rank holds of the parameters and of the optimizer's state, and its decoder layers."""
        params = sum(p.numel() * p.element_size() for p in self.model.parameters())
        state = sum(value.numel() * value.element_size() for entry in optimizer.state.values()
                    for value in entry.values() if isinstance(value, torch.Tensor) and value.dim() > 0)
        return {"param_bytes": params, "optimizer_bytes": state, "decoder_layers": len(self.stage_module.blocks)}

    def full_state(self) -> dict[str, Any] | None:
        """Every stage's weights gathered on rank 0 (every rank calls this; None on the others): a
        LoRA model's adapter weights as peft names them (AdapterWeights), else the model's."""
        if hasattr(self.model, "peft_config"):
            from peft.utils import get_peft_model_state_dict

            mine = {name: t.detach().cpu() for name, t in get_peft_model_state_dict(self.model).items()}
        else:
            mine = {name: tensor.detach().cpu() for name, tensor in self.model.state_dict().items()}
        gathered: list[Any] = [None] * self.dist.world_size if self.dist.is_main else []
        torch_dist.gather_object(mine, gathered if self.dist.is_main else None, dst=0)
        if not self.dist.is_main:
            return None
        full: dict[str, Any] = AdapterWeights() if hasattr(self.model, "peft_config") else {}
        for part in gathered:
            full.update(part)
        if self.tied and not isinstance(full, AdapterWeights):
            full.pop("lm_head.weight", None)  # stored once, as the embeddings
            full.pop("base_model.model.lm_head.weight", None)
        return full


def mean_loss(pipelined: Pipelined, examples: list[Example], pad_id: int, loss_fn: Callable) -> tuple[float, int]:
    """(summed loss over `examples`, their target count), evaluated through the stages a
    micro-batch at a time (the last filled with copies whose targets are masked)."""
    rows = pipelined.micro_batch
    total, targets = 0.0, sum(e.targets for e in examples)
    for start in range(0, len(examples), rows):
        part = examples[start:start + rows]
        part = part + [_masked(part[0])] * (rows - len(part))
        total += pipelined.run(part, pad_id, loss_fn, train=False)
    return total, targets


def _masked(example: Example) -> Example:
    return Example(input_ids=example.input_ids, labels=[IGNORE] * len(example.labels))
