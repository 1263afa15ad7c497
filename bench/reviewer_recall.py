"""The reviewer against a person: on test-half articles a person read and marked sentence by
sentence (training/data/labelled/reader_marked.json: each defect a reader counts, with its kind:
meta, repeated, off-brief, junk, claim), the share of marked sentences the reviewer proposes a
change to (recall), and the share of its proposals a person marked too (precision), per kind.

    .venv/bin/python bench/reviewer_recall.py          # a few seconds; no LLM (every check but transitions)
    .venv/bin/python bench/reviewer_recall.py --marks training/data/labelled/reader_marked_dev.json

The marks in reader_marked.json were made on articles `manage.py evaluate --half test` wrote,
after the reviewer's checks were written, and nothing in the reviewer is tuned to them; changes
to the reviewer are tried on the dev half's marks (reader_marked_dev.json) first."""

from __future__ import annotations

import json
import os
import sys
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

MARKED = ROOT / "training" / "data" / "labelled" / "reader_marked.json"  # test-half articles: judge only
KINDS = ("meta", "repeated", "off-brief", "junk", "claim")


def main() -> None:
    import argparse

    from agents import quality
    from agents.roles import reader_checks, reviewer

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--marks", type=Path, default=MARKED,
                        help="the marked articles (the dev half's, reader_marked_dev.json, are the ones to tune on)")
    articles = json.loads(parser.parse_args().marks.read_text())
    judges = reader_checks.Judges.default()
    found, marked, proposed, right = Counter(), Counter(), 0, 0
    print("| brief | sentences | marked by a person | reviewer proposals | found | proposals marked |")
    print("|---|---|---|---|---|---|")
    for article in articles:
        sections = [(str(i), heading, text) for i, (heading, text) in enumerate(article["sections"])]
        proposals = [p for p in reviewer.review(None, article["topic"], sections, known=article["topic"],
                                                judges=judges) if p.kind not in ("consistency", "transition")]
        spans = [(int(p.section_key), quality.normalise(p.original)) for p in proposals]
        marks = [(m["section"], quality.normalise(m["sentence"]), m["kind"]) for m in article["marks"]]

        def covers(section: int, sentence: str, span: tuple[int, str]) -> bool:
            return span[0] == section and (sentence in span[1] or span[1] in sentence)

        hits = [any(covers(s, text, span) for span in spans) for s, text, _ in marks]
        for (_, _, kind), hit in zip(marks, hits, strict=True):
            marked[kind] += 1
            found[kind] += hit
        agreed = sum(any(covers(s, text, span) for s, text, _ in marks) for span in spans)
        proposed += len(spans)
        right += agreed
        said = sum(len(quality.sentences(text)) for _, _, text in sections)
        print(f"| {article['brief']} {article['topic'][:40]} | {said} | {len(marks)} | {len(spans)} | "
              f"{sum(hits)} | {agreed} |")
    total = sum(marked.values())
    print(f"\nRecall: {100 * sum(found.values()) / max(1, total):.0f}% of {total} marked sentences; "
          f"precision: {100 * right / max(1, proposed):.0f}% of {proposed} proposals.")
    print("By kind (found / marked): " + ", ".join(f"{k} {found[k]}/{marked[k]}" for k in KINDS if marked[k]))


if __name__ == "__main__":
    main()
