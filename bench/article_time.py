"""How long a 1,000-word article takes, as a person asks for one: the chief editor plans, the
writers search sentence by sentence, the reviewer reads it and the finisher writes title and
lead; in one process on the bundled model (the app's worker does the same in a task), on the
machine's cores.

    .venv/bin/python bench/article_time.py ["topic"] [--words 1000]    # minutes; run it on a quiet machine

Prints the seconds of each stage the run reports, the words against the budget, and the
writers' generated tokens per kept word."""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")


class Counted:
    """The engine, counting the tokens the writers generate."""

    def __init__(self, engine):
        self.engine, self.writer_tokens = engine, 0

    def stream(self, requests, cancel=None):
        requests = list(requests)
        writers = {r.id for r in requests if r.id.startswith("writer")}
        for delta in self.engine.stream(requests, cancel=cancel):
            if delta.finished and delta.request_id in writers:
                self.writer_tokens += delta.completion_tokens
            yield delta


def main() -> None:
    import torch

    from agents import evaluation
    from agents.coordinator import write_article
    from agents.llm.bundled import bundled_model_dir
    from agents.llm.transformers_backend import TransformersEngine
    from agents.outline import Brief

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("topic", nargs="?", default="The history of coffee and how it spread around the world")
    parser.add_argument("--words", type=int, default=1000)
    args = parser.parse_args()
    started = time.monotonic()
    engine = TransformersEngine(bundled_model_dir(ROOT / "var" / "models"))
    loaded = time.monotonic() - started
    counted = Counted(engine)
    try:
        article = write_article(counted, Brief(topic=args.topic, target_words=args.words, audience="curious adults"))
    finally:
        engine.close()
    kept = sum(len(text.split()) for _, text in article.sections)
    print(f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads, "
          f"dtype {engine.dtype}")
    print(f"model loaded in {loaded:.0f} s; article in {article.seconds:.0f} s "
          f"({article.seconds / 60:.1f} min): {article.words} words of {args.words} (S_l "
          f"{evaluation.length_score(article.words, args.words):.1f}), {len(article.sections)} sections, "
          f"{len(article.proposals)} reviewer proposals, {counted.writer_tokens / max(1, kept):.2f} writer "
          f"tokens per kept word; outline: {article.outline_path}")


if __name__ == "__main__":
    main()
