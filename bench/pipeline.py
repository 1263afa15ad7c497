"""Pipeline benchmark: a 1,500-word article in 6 sections, written by the team in parallel (one
batch) vs by one writer section after section, on the bundled model, 2 CPU threads.

    .venv/bin/python bench/pipeline.py      # about 3 minutes here
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402

from agents import evaluation  # noqa: E402
from agents.coordinator import write_article  # noqa: E402
from agents.llm.bundled import bundled_model_dir  # noqa: E402
from agents.llm.transformers_backend import TransformersEngine  # noqa: E402
from agents.outline import Brief, PlannedSection  # noqa: E402

OUTLINE = [
    ("Books before printing", "How books were copied by hand and what they cost."),
    ("Gutenberg and movable type", "The invention: metal type, the press, oil-based ink."),
    ("The spread of printing", "How presses spread across Europe within fifty years."),
    ("Printing and the Reformation", "Pamphlets, Luther and the speed of ideas."),
    ("Science and the printed word", "Exact copies, tables and diagrams for scholars."),
    ("Legacy of the press", "What the press teaches about today's media."),
]


def main() -> None:
    torch.set_num_threads(2)
    engine = TransformersEngine(bundled_model_dir(ROOT / "var" / "models"))
    brief = Brief(topic="How the printing press changed Europe", target_words=1500, audience="curious readers")

    def sections() -> list[PlannedSection]:
        return [PlannedSection(heading, goal, [], 250) for heading, goal in OUTLINE]

    write_article(engine, Brief(topic="warm-up", target_words=200), sections=[PlannedSection("A", "", [], 100),
                                                                               PlannedSection("B", "", [], 100)],
                  review_article=False)
    rows = []
    for label, batch_size in (("one writer, section after section", 1), ("team, all 6 sections in parallel", 6)):
        started = time.monotonic()
        article = write_article(engine, brief, batch_size=batch_size, sections=sections(), finish_article=False,
                                review_article=False)
        seconds = time.monotonic() - started
        per_section = [len(text.split()) for _, text in article.sections]
        rows.append((label, seconds, article.words, evaluation.length_score(article.words, 1500), per_section))
        print(rows[-1], flush=True)
    print(f"\n{engine.dtype}, 2 torch threads, bundled SmolLM2-135M-Instruct, outline fixed (6 x 250 words)\n")
    print("| arm | wall s | words | S_l | words per section (budget 250) |\n|---|---|---|---|---|")
    for label, seconds, words, score, per_section in rows:
        print(f"| {label} | {seconds:.1f} | {words} | {score:.1f} | {', '.join(map(str, per_section))} |")
    print(f"| speed-up | {rows[0][1] / rows[1][1]:.1f}x | | | |")
    engine.close()  # stop the serving core's thread before the interpreter tears torch down


if __name__ == "__main__":
    main()
