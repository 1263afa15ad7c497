"""The recipes in training/ as the admin's training jobs see them: the options an admin may set
are read from each recipe's own argument parser (declared once, there), less the ones a job
sets itself (its folders, the model, the data, the device)."""

from __future__ import annotations

import argparse
from pathlib import Path

from training import options as recipe_options

# The recipes' option parsers (training/options.py: no torch there, so the web process checks a
# job's options without loading the model stack).
RECIPES = {"lora": recipe_options.lora, "distill": recipe_options.distill, "prune": recipe_options.prune,
           "quantize": recipe_options.quantize, "self_train": recipe_options.self_train}
SET_BY_JOB = frozenset({"help", "out", "device", "resume", "base", "data", "role", "teacher", "model",
                        "briefs", "eval_text", "calibration", "text", "labels"})

DATA = Path(__file__).resolve().parents[2] / "training" / "data"
EVAL_TEXT = DATA / "heldout.txt"  # held-out prose for perplexity (and the pruner's calibration)
BRIEFS = DATA / "distill_briefs.json"  # briefs the teacher writes sections for when distilling
HEAL_TEXT = DATA / "sources" / "sleep" / "sleep-facts.md"  # text a pruned model heals on


def options(kind: str) -> dict[str, argparse.Action]:
    """Option name (as in JSON: max_length) -> its argparse action, for a recipe."""
    if kind not in RECIPES:
        return {}
    return {action.dest: action for action in RECIPES[kind]()._actions
            if action.option_strings and action.dest not in SET_BY_JOB}


def _type(action: argparse.Action) -> type:
    if isinstance(action, argparse._StoreTrueAction | argparse._StoreFalseAction):
        return bool
    return action.type if action.type in (int, float) else str


def option_errors(kind: str, chosen) -> str:
    """Why these options cannot be given to the recipe (empty when they can)."""
    if not isinstance(chosen, dict):
        return "Options must be a JSON object."
    allowed = options(kind)
    for key, value in chosen.items():
        if key not in allowed:
            return f"{key!r} is not an option of {kind} (options: {', '.join(allowed)})."
        wanted = _type(allowed[key])
        fits = isinstance(value, wanted) and not (wanted is not bool and isinstance(value, bool))
        if not fits and not (wanted is float and isinstance(value, int) and not isinstance(value, bool)):
            return f"{key!r} must be a {wanted.__name__}."
        if allowed[key].choices and value not in allowed[key].choices:
            return f"{key!r} must be one of {', '.join(map(str, allowed[key].choices))}."
    return ""


def flags(chosen: dict) -> list[str]:
    """The options as the recipe's command-line flags."""
    argv = []
    for key, value in chosen.items():
        flag = "--" + key.replace("_", "-")
        if isinstance(value, bool):
            argv += [flag] if value else []
        else:
            argv += [flag, str(value)]
    return argv
