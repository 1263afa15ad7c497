"""The chief editor's outline for every brief (training/data/briefs.json, or --briefs FILE), on the
bundled model in this process: how each came about (model, model-repaired, re-asked or fallback),
its headings, and seconds. The issue's target is at most one fallback in ten briefs; greedy
decoding differs between CPUs (AVX2 and AVX-512 round differently), so count on the machine at hand.

    .venv/bin/python bench/outlines.py [--only 9 13] [--briefs FILE]
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "webapp.settings")


def main() -> None:
    import django

    django.setup()
    from agents import coordinator
    from agents.llm.metrics import device_name
    from agents.roles.chief_editor import subtopics
    from webapp import llm
    from webapp.registry import services as registry
    from webapp.runs.management.commands.evaluate import BRIEFS, _brief

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--briefs", type=Path, default=BRIEFS)
    parser.add_argument("--only", type=int, nargs="*", default=None, help="only these briefs (0-based)")
    args = parser.parse_args()
    items = json.loads(args.briefs.read_text())
    registry.migrate_if_fresh()
    engine = llm.get_engine()
    print(f"# {device_name('cpu')}", flush=True)
    paths: collections.Counter = collections.Counter()
    for index, item in enumerate(items):
        if args.only is not None and index not in args.only:
            continue
        brief = _brief(item)
        started = time.monotonic()
        plan = coordinator.plan(engine, brief)
        seconds = time.monotonic() - started
        paths[plan.path] += 1
        headings = [section.heading for section in plan.sections]
        print(f"{index:>2} {plan.path:<15} {seconds:5.1f} s  {brief.topic[:48]!r}: {headings}"
              f"  (subtopics {subtopics(brief)}; problems {plan.problems})", flush=True)
    print(f"paths: {dict(paths)}; fallback {paths['fallback']} of {sum(paths.values())}")


if __name__ == "__main__":
    main()
