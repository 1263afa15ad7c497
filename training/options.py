"""Every training recipe's command-line options, declared once here and read by the recipes
(`training/<recipe>.py`) and by the admin's training jobs (`webapp/jobs/recipes.py`). Nothing
here imports torch, so the web process can check a job's options without loading it."""

from __future__ import annotations

import argparse
from pathlib import Path

from agents.roles.section_text import ROLE as WRITER_ROLE

# How a recipe's model is spread over its processes (training/sharding.py, training/pipeline.py).
STRATEGIES = ("ddp", "fsdp", "pipeline")


def base(description: str = "") -> argparse.ArgumentParser:
    """The options every recipe has: its folders, device, seed, batch and schedule."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--out", type=Path, required=True, help="output folder (created; reused by --resume)")
    parser.add_argument("--device", default="auto", help="auto, cpu or cuda (one GPU per process under torchrun)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--max-length", type=int, default=1024, help="tokens per example at most")
    parser.add_argument("--batch-size", type=int, default=8, help="examples per optimizer step, over all ranks")
    parser.add_argument("--micro-batch", type=int, default=2, help="examples per forward pass on one rank")
    parser.add_argument("--steps", type=int, default=0, help="optimizer steps (default: --epochs over the data)")
    parser.add_argument("--epochs", type=float, default=1.0)
    parser.add_argument("--lr", type=float, default=2e-4)
    parser.add_argument("--warmup", type=int, default=0, help="steps of linear learning-rate warm-up")
    parser.add_argument("--save-every", type=int, default=50, help="steps between checkpoints")
    parser.add_argument("--resume", action="store_true", help="continue from the checkpoint in --out")
    parser.add_argument("--strategy", choices=STRATEGIES, default="ddp",
                        help="several processes: ddp (each holds the whole model), fsdp (each decoder layer's "
                             "weights and the optimizer's state sharded over them; training/sharding.py) or "
                             "pipeline (consecutive decoder layers on consecutive processes; training/pipeline.py)")
    return parser


def lora(description: str = "") -> argparse.ArgumentParser:
    parser = base(description)
    parser.add_argument("--base", type=Path, required=True, help="the base model folder the engine serves")
    parser.add_argument("--data", type=Path, required=True, help="a folder from export_training_data")
    parser.add_argument("--role", required=True)
    parser.add_argument("--labels", default="accepted", help="comma-separated labels to train on (accepted)")
    parser.add_argument("--rank", type=int, default=16)
    parser.add_argument("--alpha", type=float, default=32)
    parser.add_argument("--targets", default="q_proj,k_proj,v_proj,o_proj", help="Linear layers that get LoRA")
    parser.set_defaults(lr=2e-4)
    return parser


def distill(description: str = "") -> argparse.ArgumentParser:
    parser = base(description)
    parser.add_argument("--teacher", type=Path, required=True, help="the model folder to distil")
    parser.add_argument("--layers", type=int, default=0, help="student layers (default: half the teacher's)")
    parser.add_argument("--init", choices=["importance", "even"], default="importance",
                        help="which teacher layers the student keeps: those that change the hidden state most on "
                             "the training text (as prune.py measures it), or evenly spaced ones")
    parser.add_argument("--data", type=Path, help="a folder from export_training_data (its accepted pairs)")
    parser.add_argument("--role", default="writer", help="the role of the exported pairs")
    parser.add_argument("--briefs", type=Path, help="a JSON list of briefs the teacher writes sections for")
    parser.add_argument("--text", type=Path, action="append", default=[], help="more plain-text files to learn from")
    parser.add_argument("--generate-tokens", type=int, default=192, help="tokens the teacher writes per prompt")
    parser.add_argument("--eval-text", type=Path, required=True, help="held-out plain text for perplexity")
    parser.add_argument("--alpha", type=float, default=0.5, help="weight of the hard (text) loss")
    parser.add_argument("--temperature", type=float, default=2.0)
    parser.set_defaults(lr=1e-4)
    return parser


def prune(description: str = "") -> argparse.ArgumentParser:
    parser = base(description)
    parser.add_argument("--model", type=Path, required=True)
    parser.add_argument("--drop-layers", type=int, default=0, help="how many whole layers to remove")
    parser.add_argument("--mlp-keep", type=float, default=1.0, help="share of MLP channels to keep (0-1]")
    parser.add_argument("--calibration", type=Path, required=True, help="plain text the importances are measured on")
    parser.add_argument("--eval-text", type=Path, required=True, help="held-out plain text for perplexity")
    parser.add_argument("--heal-steps", type=int, default=0, help="fine-tuning steps after pruning")
    parser.add_argument("--text", type=Path, action="append", default=[], help="plain text to heal on")
    parser.set_defaults(lr=5e-5, max_length=512)
    return parser


def quantize(description: str = "") -> argparse.ArgumentParser:
    parser = base(description)
    parser.add_argument("--model", type=Path, required=True, help="a float model folder")
    parser.add_argument("--eval-text", type=Path, required=True, help="held-out plain text for perplexity and speed")
    parser.set_defaults(max_length=512, device="cpu")
    return parser


def self_train(description: str = "") -> argparse.ArgumentParser:
    parser = lora(description)
    parser.description = __doc__.splitlines()[0]
    for action in parser._actions:
        if action.dest == "data":
            action.required, action.help = False, "ignored: the pairs are generated into OUT/data"
        elif action.dest == "role":
            action.required, action.default = False, WRITER_ROLE
    parser.add_argument("--briefs", type=Path, required=True,
                        help="a JSON list of briefs ({topic, audience?, words?, sections?: [{heading, goal?, "
                             "words}]}) to write for; with sections, that outline is used as it is")
    parser.add_argument("--samples", type=int, default=2, help="sampled candidates per section")
    parser.add_argument("--temperature", type=float, default=0.7, help="sampling temperature of the candidates")
    parser.add_argument("--words", type=int, default=600, help="article length for briefs that give none")
    parser.add_argument("--heldout-share", type=float, default=0.2,
                        help="share of the briefs (of those with kept pairs) held out")
    parser.add_argument("--max-briefs", type=int, default=0, help="only the first N briefs")
    parser.add_argument("--parallel", type=int, default=4, help="briefs written at once (their rows share a batch)")
    return parser
