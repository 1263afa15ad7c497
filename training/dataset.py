"""The training data of every recipe: exported (prompt, completion) pairs and plain text as
token examples, global batches and their split over ranks and micro-batches, the token loss, and
held-out evaluation."""

from __future__ import annotations

import json
import logging
import math
import random
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F

if TYPE_CHECKING:
    from training.common import Dist

log = logging.getLogger("training")

IGNORE = -100


class DatasetError(ValueError):
    """Training data that cannot be used; the message says what is wrong and where."""


# --- data --------------------------------------------------------------------------------------


def read_pairs(path: Path, role: str, labels: tuple[str, ...] = ("accepted",), split: str = "train") -> list[dict]:
    """Pairs exported by `manage.py export_training_data`: a folder (its train.jsonl or
    heldout.jsonl) or one .jsonl file. Pairs of another role are an error, not skipped; pairs
    with other labels are left out and counted in the log."""
    file = path / f"{split}.jsonl" if path.is_dir() else path
    if not file.is_file():
        raise DatasetError(f"{file}: no such file (export one with `manage.py export_training_data`)")
    kept: list = []
    left_out: dict[str, int] = {}
    with open(file, encoding="utf-8") as handle:
        for number, line in enumerate(handle, 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
                prompt, completion = record["prompt"], record["completion"]
            except (json.JSONDecodeError, KeyError, TypeError) as error:
                raise DatasetError(f"{file}:{number}: not a training pair ({error})") from None
            if record.get("role", role) != role:
                raise DatasetError(f"{file}:{number}: this pair is for the role {record.get('role')!r}, not {role!r}")
            if not isinstance(prompt, list) or not all(isinstance(m, dict) and "content" in m for m in prompt):
                raise DatasetError(f"{file}:{number}: prompt must be a list of chat messages")
            label = record.get("label", "accepted")
            if label not in labels or not str(completion).strip():
                left_out[label] = left_out.get(label, 0) + 1
                continue
            kept.append(record)
    if left_out:
        log.info("%s: left out %s", file.name, ", ".join(f"{n} {label}" for label, n in sorted(left_out.items())))
    return kept


@dataclass
class Example:
    input_ids: list[int]
    labels: list[int]  # IGNORE where the model is not trained to predict (the prompt)

    @property
    def targets(self) -> int:
        return sum(1 for t in self.labels[1:] if t != IGNORE)


def encode_pair(tokenizer, record: dict, max_length: int) -> Example:
    """The chat prompt exactly as the engine formats it, then the completion and the end token;
    only the completion is a target. Too long: the prompt loses its start, the completion its end."""
    prompt = tokenizer.apply_chat_template(record["prompt"], add_generation_prompt=True, tokenize=False)
    prompt_ids = tokenizer(prompt, add_special_tokens=False).input_ids
    answer_ids = tokenizer(record["completion"], add_special_tokens=False).input_ids + [tokenizer.eos_token_id]
    answer_ids = answer_ids[: max_length // 2] if len(prompt_ids) + len(answer_ids) > max_length else answer_ids
    prompt_ids = prompt_ids[-(max_length - len(answer_ids)):]
    return Example(prompt_ids + answer_ids, [IGNORE] * len(prompt_ids) + answer_ids)


def encode_text(tokenizer, text: str, max_length: int) -> list[Example]:
    """Plain text in windows of max_length tokens, every token a target."""
    ids = tokenizer(text, add_special_tokens=False).input_ids
    return [Example(ids[i:i + max_length], ids[i:i + max_length]) for i in range(0, len(ids), max_length)
            if len(ids[i:i + max_length]) > 1]


def pair_examples(tokenizer, records: list[dict], max_length: int) -> list[Example]:
    return [encode_pair(tokenizer, r, max_length) for r in records]


def collate(examples: list[Example], pad_id: int, device: torch.device, width: int = 0) -> dict[str, torch.Tensor]:
    """Right-padded to the longest example, or to `width` (a pipeline's stages pass fixed shapes)."""
    width = max(width, *(len(e.input_ids) for e in examples))
    ids = torch.full((len(examples), width), pad_id, dtype=torch.long)
    labels = torch.full((len(examples), width), IGNORE, dtype=torch.long)
    mask = torch.zeros((len(examples), width), dtype=torch.long)
    for row, example in enumerate(examples):
        n = len(example.input_ids)
        ids[row, :n], labels[row, :n], mask[row, :n] = (torch.tensor(example.input_ids),
                                                         torch.tensor(example.labels), 1)
    return {"input_ids": ids.to(device), "labels": labels.to(device), "attention_mask": mask.to(device)}


def step_batches(count: int, batch_size: int, seed: int, step: int) -> list[int]:
    """The example indices of one optimizer step: epochs of a seeded shuffle, read in order, so
    that step k is the same on every rank and after a resume."""
    per_epoch = max(1, count // batch_size)
    epoch, position = divmod(step, per_epoch)
    order = list(range(count))
    random.Random(seed * 1_000_003 + epoch).shuffle(order)
    start = position * batch_size
    chosen = order[start:start + batch_size]
    while len(chosen) < batch_size:  # fewer examples than a batch (or a ragged end): wrap around
        chosen += order[:batch_size - len(chosen)]
    return chosen


def total_steps(args, count: int) -> int:
    if args.steps:
        return args.steps
    return max(1, math.ceil(args.epochs * count / args.batch_size))


def check_batching(args, dist: Dist, count: int, minimum: int = 2) -> None:
    if count < minimum:
        raise DatasetError(f"only {count} training example(s); at least {minimum} are needed")
    ranks = 1 if getattr(args, "strategy", "") == "pipeline" else dist.world_size  # a pipeline's see it all
    if args.batch_size % ranks:
        raise DatasetError(f"--batch-size {args.batch_size} does not split over {ranks} processes")
    if (args.batch_size // ranks) % args.micro_batch:
        raise DatasetError(f"--micro-batch {args.micro_batch} does not divide the "
                           f"{args.batch_size // ranks} examples each process gets per step")


# --- losses ------------------------------------------------------------------------------------


def token_losses(logits: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, int]:
    """Summed next-token cross-entropy over the targets, and how many targets there were."""
    shift_logits, shift_labels = logits[:, :-1].float(), labels[:, 1:]
    loss = F.cross_entropy(shift_logits.reshape(-1, shift_logits.size(-1)), shift_labels.reshape(-1),
                           ignore_index=IGNORE, reduction="sum")
    return loss, int((shift_labels != IGNORE).sum())


class LogitsLoss:
    """A recipe's loss, summed over a batch's targets: `loss(model, batch)` runs the model;
    `loss.of(logits, batch)` takes the logits a pipeline's last stage ends with."""

    def __init__(self, of: Callable[[torch.Tensor, dict[str, torch.Tensor]], torch.Tensor]):
        self.of = of

    def __call__(self, model, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return self.of(model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits, batch)


lm_loss = LogitsLoss(lambda logits, batch: token_losses(logits, batch["labels"])[0])


@torch.no_grad()
def evaluate(model, examples: list[Example], dist: Dist, pad_id: int, micro_batch: int = 4) -> dict[str, float]:
    """Mean token loss and perplexity over `examples` (split over the ranks, summed back). Every
    rank runs as many forward passes (a sharded model's are collective): one with fewer examples
    runs its last pass again and does not count it."""
    was_training = model.training
    model.eval()
    total, count = 0.0, 0.0
    mine = examples[dist.rank::dist.world_size]
    passes = math.ceil(math.ceil(len(examples) / dist.world_size) / micro_batch)
    for number in range(passes):
        start = number * micro_batch
        batch = collate(mine[start:start + micro_batch] or mine[-micro_batch:] or examples[:1], pad_id, dist.device)
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
        if start < len(mine):
            loss, n = token_losses(logits, batch["labels"])
            total, count = total + float(loss), count + n
    total, count = dist.all_sum([total, count])
    model.train(was_training)
    if count == 0:
        return {"loss": float("nan"), "perplexity": float("nan"), "tokens": 0}
    mean = total / count
    return {"loss": round(mean, 5), "perplexity": round(math.exp(min(mean, 50)), 4), "tokens": int(count)}
