"""Reading short answers from small models, which wrap them in chatter: "Here's a title:",
quotes, "Title:" labels. Shared by the reviewer and the finisher."""

from __future__ import annotations

import re

PREAMBLE = re.compile(r"^\s*(?:sure|here|certainly|okay|of course)\b|:\s*$", re.I)
QUOTED = re.compile(r"^[\"“](.+?)[\"”]?$")
LABEL = re.compile(r"^\s*(?:\*\*)?[A-Z][\w ]{0,20}:\*{0,2}\s+")


def unwrap(answer: str) -> str:
    """The answer without preamble lines, a leading label, or the quotes around it."""
    lines = [line.strip() for line in answer.strip().splitlines() if line.strip()]
    lines = [line for line in lines if not PREAMBLE.search(line)]
    text = "\n".join(lines)
    text = LABEL.sub("", text).strip()
    quoted = QUOTED.match(text.replace("\n", " "))
    if quoted:
        text = quoted.group(1)
    return text.strip().strip("\"“”*_ ")


def sentences(text: str) -> list[str]:
    return [s.strip() for s in re.split(r"(?<=[.!?])\s+", text) if s.strip()]


def first_sentence(answer: str) -> str:
    inline = re.search(r"[\"“]([^\"“”]{20,})[\"”]", answer)  # 'A good one is "..."' on one line
    text = inline.group(1) if inline and not answer.lstrip().startswith(("\"", "“")) else unwrap(answer)
    return (sentences(text.splitlines()[0] if text else "") or [""])[0]
