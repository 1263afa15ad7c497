"""What every recipe shares: distributed set-up from torchrun's environment, the training loop,
checkpoints and the files a recipe leaves behind (the data, batches and losses are in
training/dataset.py, size and speed in training/footprint.py).

One process or many, the maths is the same: each optimizer step sees one global batch, split
over the ranks and then into micro-batches; every micro-batch's summed token loss is divided by
the number of target tokens in the whole global batch (known on every rank, since every rank
reads the whole dataset), so the gradient DDP averages is exactly the one-process gradient.
Gradients are synchronised only on the last micro-step of a step (`no_sync` before it). Under
the pipeline strategy every rank sees the whole global batch instead and computes its layers'
share of it (training/pipeline.py), with the same loss normalisation.

Files in the output folder (rank 0 writes them):
- metrics.jsonl: one line per step ({"step", "total_steps", "loss", "lr"}) and per evaluation;
- checkpoint/: the newest checkpoint (trainable weights, optimizer, step), replaced atomically;
- result.json: written last, {"status": "done" | "cancelled" | "failed", "metrics", "output"}.

A recipe stops cleanly on SIGTERM or SIGINT (torchrun forwards both): every rank finishes the
step it is in, rank 0 saves a checkpoint, and the process exits with status 3.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import logging
import os
import random
import shutil
import signal
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.distributed as torch_dist

from training import dataset, footprint, layout, pipeline, sharding
from training.dataset import DatasetError, Example, check_batching, collate, lm_loss, step_batches, total_steps

log = logging.getLogger("training")


class Cancelled(Exception):
    """SIGTERM or SIGINT arrived; the recipe saves a checkpoint and stops."""


# --- processes ---------------------------------------------------------------------------------


@dataclass
class Dist:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    def all_sum(self, values: list[float]) -> list[float]:
        """Sum numbers over every rank (a no-op in one process)."""
        if not self.enabled:
            return values
        tensor = torch.tensor(values, dtype=torch.float64, device=self.device)
        torch_dist.all_reduce(tensor)
        return tensor.tolist()

    def barrier(self) -> None:
        if self.enabled:
            torch_dist.barrier()


def pick_device(name: str, local_rank: int) -> torch.device:
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda":
        if not torch.cuda.is_available():
            raise SystemExit("--device cuda: no CUDA device is visible")
        torch.cuda.set_device(local_rank % torch.cuda.device_count())
        return torch.device("cuda", local_rank % torch.cuda.device_count())
    return torch.device(name)


@contextlib.contextmanager
def distributed(device: str = "auto") -> Iterator[Dist]:
    """One process, or one of torchrun's: the process group (nccl on GPUs, gloo on CPUs) is set
    up from RANK, WORLD_SIZE and LOCAL_RANK and always torn down, whatever happens inside."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank, local_rank = int(os.environ.get("RANK", "0")), int(os.environ.get("LOCAL_RANK", "0"))
    where = pick_device(device, local_rank)
    if world_size > 1:
        backend = "nccl" if where.type == "cuda" else "gloo"
        torch_dist.init_process_group(backend, rank=rank, world_size=world_size, timeout=dt.timedelta(minutes=30))
    setup_logging(rank)
    try:
        yield Dist(rank, world_size, local_rank, where)
    finally:
        if world_size > 1 and torch_dist.is_initialized():
            torch_dist.destroy_process_group()


def setup_logging(rank: int) -> None:
    """Rank 0 logs progress; the other ranks only warnings and errors, so logs are read once."""
    logging.basicConfig(level=logging.INFO if rank == 0 else logging.WARNING, stream=sys.stdout,
                        format=f"%(asctime)s [rank {rank}] %(message)s", datefmt="%H:%M:%S", force=True)


class StopFlag:
    """Set by SIGTERM/SIGINT; checked (and agreed on by every rank) between optimizer steps."""

    def __init__(self) -> None:
        self.raised = False
        self.previous = {sig: signal.signal(sig, self._set) for sig in (signal.SIGTERM, signal.SIGINT)}

    def restore(self) -> None:
        """Put back the handlers there were (a recipe run in-process leaves its caller as it was)."""
        for sig, handler in self.previous.items():
            signal.signal(sig, handler)

    def _set(self, signum, frame) -> None:
        self.raised = True

    def check(self, dist: Dist) -> None:
        if dist.all_sum([float(self.raised)])[0] > 0:
            raise Cancelled()


def seed_everything(seed: int) -> None:
    random.seed(seed)
    torch.manual_seed(seed)


# --- arguments and files -----------------------------------------------------------------------


class Output:
    """The output folder; only rank 0 writes to it."""

    def __init__(self, folder: Path, dist: Dist):
        self.folder, self.dist = folder, dist
        if dist.is_main:
            folder.mkdir(parents=True, exist_ok=True)
            (folder / layout.RESULT).unlink(missing_ok=True)
        dist.barrier()

    def metric(self, **values) -> None:
        if self.dist.is_main:
            values.setdefault("time", round(time.time(), 3))
            with open(self.folder / layout.METRICS, "a") as handle:
                handle.write(json.dumps(values) + "\n")

    def result(self, status: str, metrics: dict, output: str = "", **extra) -> None:
        if self.dist.is_main:
            payload = {"status": status, "metrics": metrics, "output": output, **extra}
            _write_json_atomic(self.folder / layout.RESULT, payload)

    @property
    def checkpoint(self) -> Path:
        return self.folder / layout.CHECKPOINT


def _write_json_atomic(path: Path, payload: dict) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(payload, indent=2) + "\n")
    tmp.replace(path)


def read_json(path: Path) -> dict:
    return json.loads(path.read_text())


# --- the loop ----------------------------------------------------------------------------------


LossFn = Callable[[torch.nn.Module, dict[str, torch.Tensor]], torch.Tensor]


@dataclass
class TrainState:
    step: int = 0
    losses: list[float] = field(default_factory=list)
    wrapped: sharding.Wrapped | pipeline.Pipelined | None = None  # the model as trained (sharded, or a stage)


def _wrap(model: torch.nn.Module, args, dist: Dist) -> sharding.Wrapped | pipeline.Pipelined:
    strategy = getattr(args, "strategy", "ddp")
    if strategy == "pipeline" and dist.enabled:
        return pipeline.Pipelined(model, dist, args.micro_batch, args.max_length)
    return sharding.Wrapped(model, dist, strategy)


def train(model: torch.nn.Module, examples: list[Example], args, dist: Dist, output: Output, *,
          pad_id: int, loss_fn: LossFn = lm_loss, save: Callable[..., None], load: Callable[[Path], None],
          stop: StopFlag) -> TrainState:
    """Run the optimizer steps. `model` is the plain model; it is wrapped here for the strategy
    (training/sharding.py: DDP, or sharded in place under fsdp) when there are several processes.
    `save(folder)` / `load(folder)` write and read the trainable weights (an adapter, or the whole
    model) for ddp's checkpoints."""
    steps = total_steps(args, len(examples))
    check_batching(args, dist, len(examples))
    wrapped = _wrap(model, args, dist)
    parameters = [p for p in model.parameters() if p.requires_grad]  # after sharding: the shards, or the stage
    optimizer = torch.optim.AdamW(parameters, lr=args.lr, weight_decay=0.0)
    state = TrainState(0, [], wrapped)
    if args.resume and (output.checkpoint / "trainer.json").is_file():
        _resume(output.checkpoint, wrapped, optimizer, dist, load)
        saved = read_json(output.checkpoint / "trainer.json")
        state.step, state.losses = saved["step"], saved["losses"]
        log.info("resumed from step %d", state.step)
    model.train()
    started, tokens, first = time.monotonic(), 0, state.step
    try:
        while state.step < steps:
            stop.check(dist)
            lr = args.lr * min(1.0, (state.step + 1) / args.warmup) if args.warmup else args.lr
            for group in optimizer.param_groups:
                group["lr"] = lr
            if isinstance(wrapped, pipeline.Pipelined):
                step_loss, step_tokens = wrapped.train_step(examples, args, state.step, pad_id, loss_fn)
            else:
                step_loss, step_tokens = _step(wrapped, examples, args, dist, state.step, pad_id, loss_fn)
            tokens += step_tokens
            wrapped.clip(parameters, 1.0)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            state.step += 1
            state.losses.append(round(step_loss, 6))
            output.metric(step=state.step, total_steps=steps, loss=round(step_loss, 6), lr=lr)
            log.info("step %d/%d loss %.4f", state.step, steps, step_loss)
            if state.step == 1:
                footprint.record_memory(wrapped, optimizer, dist, output)
            if args.save_every and state.step % args.save_every == 0 and state.step < steps:
                checkpoint(state, optimizer, output, dist, save)
    except Cancelled:
        checkpoint(state, optimizer, output, dist, save)
        raise
    if state.step > first:
        footprint.record_speed(tokens, time.monotonic() - started, dist, output, wrapped.strategy)
    checkpoint(state, optimizer, output, dist, save)
    return state


def _step(wrapped: sharding.Wrapped, examples: list[Example], args, dist: Dist, step: int, pad_id: int,
          loss_fn: LossFn) -> tuple[float, int]:
    """One optimizer step's forward and backward passes over this rank's share of the global
    batch, micro-batch by micro-batch: the step's mean token loss over the whole global batch, and
    the tokens this rank computed."""
    per_rank = args.batch_size // dist.world_size
    micro_steps = per_rank // args.micro_batch
    chosen = [examples[i] for i in step_batches(len(examples), args.batch_size, args.seed, step)]
    targets = sum(e.targets for e in chosen)  # the whole global batch's, the same on every rank
    mine = chosen[dist.rank * per_rank:(dist.rank + 1) * per_rank]
    summed, tokens = 0.0, 0
    for micro in range(micro_steps):
        batch = collate(mine[micro * args.micro_batch:(micro + 1) * args.micro_batch], pad_id, dist.device)
        tokens += int(batch["attention_mask"].sum())
        with wrapped.sync(micro == micro_steps - 1):
            loss = loss_fn(wrapped.module, batch)
            # Both strategies average gradients over ranks: scale so the result is the global mean.
            (loss * dist.world_size / max(targets, 1)).backward()
        summed += float(loss.detach())
    return dist.all_sum([summed])[0] / max(targets, 1), tokens


def evaluate(state: TrainState, model: torch.nn.Module, examples: list[Example], dist: Dist,
             pad_id: int) -> dict[str, float]:
    """dataset.evaluate of the trained model; under the pipeline, through its stages."""
    if isinstance(state.wrapped, pipeline.Pipelined):
        return state.wrapped.evaluate(examples, pad_id)
    return dataset.evaluate(model, examples, dist, pad_id)


def _resume(folder: Path, wrapped: sharding.Wrapped | pipeline.Pipelined, optimizer, dist: Dist,
            load: Callable[[Path], None]) -> None:
    sharded = (folder / sharding.SHARDED).is_dir()
    if sharded != (wrapped.strategy in sharding.DCP):
        raise DatasetError(f"the checkpoint in {folder} was written by "
                           f"--strategy {'fsdp or pipeline' if sharded else 'ddp'}; resume it with one of those")
    if sharded:
        sharding.load_sharded(wrapped.model, folder, optimizer)
    else:
        load(folder)
        optimizer.load_state_dict(torch.load(folder / "optimizer.pt", map_location=dist.device))


def checkpoint(state: TrainState, optimizer, output: Output, dist: Dist, save: Callable[..., None]) -> None:
    """The checkpoint is written beside the old one and swapped in by rank 0: a kill at any moment
    leaves the previous or the new checkpoint whole, never a half-written one. Under fsdp every
    rank writes its shards into it (sharding.py); under ddp rank 0 writes it all."""
    tmp = output.folder / "checkpoint.partial"
    if dist.is_main:
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
    dist.barrier()
    assert state.wrapped is not None
    if state.wrapped.strategy in sharding.DCP:
        sharding.save_sharded(state.wrapped.model, tmp, optimizer)
    elif dist.is_main:
        save(tmp)
        torch.save(optimizer.state_dict(), tmp / "optimizer.pt")
    if dist.is_main:
        _write_json_atomic(tmp / "trainer.json", {"step": state.step, "losses": state.losses})
        old = output.folder / "checkpoint.old"
        shutil.rmtree(old, ignore_errors=True)
        if output.checkpoint.exists():
            output.checkpoint.rename(old)
        tmp.rename(output.checkpoint)
        shutil.rmtree(old, ignore_errors=True)
        log.info("checkpoint at step %d: %s", state.step, output.checkpoint)
    dist.barrier()


# --- models ------------------------------------------------------------------------------------


def load_model(path: str | Path, dist: Dist, *, dtype: torch.dtype = torch.float32):
    """A causal LM on this process's device (a model too big for one device: --strategy fsdp or
    pipeline over several processes)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(path)
    loaded: Any = AutoModelForCausalLM.from_pretrained(path, dtype=dtype)
    return loaded.to(dist.device), tokenizer


def pad_id_of(tokenizer) -> int:
    return tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id


def model_files(model, tokenizer, device: torch.device) -> tuple[Callable[..., None], Callable[[Path], None]]:
    """save(folder) / load(folder) for a whole model: a model folder any loader reads."""
    def save(folder: Path, state_dict: dict | None = None) -> None:
        model.save_pretrained(folder, state_dict=state_dict)
        tokenizer.save_pretrained(folder)

    def load(folder: Path) -> None:
        from safetensors.torch import load_file

        # strict=False: a tied output head is stored once, as the embeddings.
        model.load_state_dict(load_file(folder / "model.safetensors", device=str(device)), strict=False)

    return save, load


def save_output(output: Output, dist: Dist, save: Callable[..., None], name: str,
                trained: TrainState | None = None) -> Path:
    """The recipe's final output folder, an ordinary one, written by rank 0 while the others wait
    (under fsdp every rank first gathers the full weights for it: `save(folder, state_dict)`)."""
    folder = output.folder / name
    full = trained.wrapped.full_state() if trained is not None and trained.wrapped is not None else None
    if dist.is_main:
        save(folder, full) if full is not None else save(folder)
    dist.barrier()
    return folder


def main(arguments: Callable[[], argparse.ArgumentParser], body, argv: list[str] | None = None) -> int:
    """A recipe's command line: parse, run body(args, dist, output, stop), report how it ended."""
    args = arguments().parse_args(argv)
    return run_recipe(lambda dist, output, stop: body(args, dist, output, stop), args)


def run_recipe(body: Callable[[Dist, Output, StopFlag], dict], args) -> int:
    """Run a recipe body and turn the way it ends into result.json and an exit status."""
    stop = StopFlag()
    with contextlib.ExitStack() as cleanup:
        cleanup.callback(stop.restore)
        dist = cleanup.enter_context(distributed(args.device))
        output = Output(args.out, dist)
        try:
            result = body(dist, output, stop)
        except Cancelled:
            output.result("cancelled", {}, checkpoint=str(output.checkpoint))
            log.warning("cancelled; checkpoint in %s", output.checkpoint)
            return layout.EXIT_CANCELLED
        except DatasetError as error:
            output.result("failed", {}, error=str(error))
            log.error("%s", error)
            return 2
        except Exception as error:
            output.result("failed", {}, error=f"{type(error).__name__}: {error}")
            raise
        output.result("done", **result)
        return 0
