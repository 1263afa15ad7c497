"""The article's steps, once: what each does, which agents do it, and what it hands the next.

Both drivers run this description. `coordinator.write_article` runs the steps one after another
in one process (for `manage.py evaluate` and the benchmarks); the app runs each as a stage of a
writing run on the agents queue (webapp/runs: a stage's Celery task is named by its step, and a
stage that is done starts the one `after` it), with people approving the plan before writing
starts, and the writers' batches on as many workers as there are.

    plan    the chief editor: the brief -> an outline with word budgets, every section longer
            than SECTION_MAX_WORDS planned as parts for several writers (coordinator.plan)
    write   the section writers: the outline's leaves in reading order, in `batches` written
            together; each writer is told its neighbours and the text already written elsewhere
            (not to be repeated) -> a text per leaf
    review  the reviewer, then the finisher: the written leaves -> proposals for people to
            accept, a title and a lead
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TypeVar

from agents.roles import chief_editor, finisher, reviewer, section_text


@dataclass(frozen=True)
class Step:
    name: str
    roles: tuple[str, ...]  # the agents that do it, in the order they work
    approved: bool = False  # people approve what the step before handed on before it starts (the app)


PLAN = Step("plan", (chief_editor.ROLE,))
WRITE = Step("write", (section_text.ROLE,), approved=True)
REVIEW = Step("review", (reviewer.ROLE, finisher.ROLE))
STEPS = (PLAN, WRITE, REVIEW)


def after(step: Step) -> Step | None:
    """The step that comes next, or None after the last."""
    index = STEPS.index(step)
    return STEPS[index + 1] if index + 1 < len(STEPS) else None


T = TypeVar("T")


def batches(leaves: Sequence[T], size: int) -> list[list[T]]:
    """The write step's batches: the leaves in reading order, `size` at a time."""
    size = max(1, size)
    return [list(leaves[start:start + size]) for start in range(0, len(leaves), size)]
