"""Writers with and without notes from the sources (section_writer.WriterOptions(notes=...)) on
one brief's outline, one after the other in one process: seconds, rounds per section, sentences
cut by kind, and cited sentences.

    .venv/bin/python bench/notes.py [--brief 3] [--arms on off]
"""

from __future__ import annotations

import argparse
import collections
import dataclasses
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
    from agents import coordinator, evaluation, quality
    from agents.retrieval import default_embedder
    from agents.roles import section_writer
    from webapp import llm
    from webapp.registry import services as registry
    from webapp.runs.management.commands.evaluate import BRIEFS, _brief, _index

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--brief", type=int, default=3, help="a brief with sources in training/data/briefs.json")
    parser.add_argument("--arms", nargs="+", choices=["on", "off"], default=["on", "off"])
    args = parser.parse_args()
    item = json.loads(BRIEFS.read_text())[args.brief]
    brief, index = _brief(item), _index(BRIEFS.parent / item["sources"])
    registry.migrate_if_fresh()
    engine = llm.get_engine()
    plan = coordinator.plan(engine, brief).sections
    write = section_writer.write_sections
    for arm in args.arms:
        rounds: dict[str, int] = {}
        cut: collections.Counter = collections.Counter()

        def with_notes(engine, brief, outline, tasks, drafts=None, options=section_writer.DEFAULTS,
                       hooks=section_writer.NO_HOOKS, _arm=arm, _rounds=rounds, _cut=cut):
            written = write(engine, brief, outline, tasks, drafts, dataclasses.replace(options, notes=_arm == "on"),
                            hooks)
            _rounds.update({key: w.rounds for key, w in written.items()})
            _cut.update(kind for w in written.values() for kind, _ in w.cut)
            return written

        coordinator.section_writer.write_sections = with_notes
        started = time.monotonic()
        article = coordinator.write_article(engine, brief, sections=plan, passages=index, finish_article=False,
                                            review_article=False)
        seconds = time.monotonic() - started
        scores = evaluation.reader_scores(brief, article.sections, article.headings, default_embedder().embed,
                                          quality.default_lexicon(), article.extra["passages"])
        print(f"notes {arm}: {seconds:.1f} s, {article.words} words, rounds {rounds}, cut {dict(cut)}, "
              f"cited {scores['cited']:.1f}%", flush=True)
    coordinator.section_writer.write_sections = write


if __name__ == "__main__":
    main()
