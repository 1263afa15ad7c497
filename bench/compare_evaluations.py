"""Two saved `manage.py evaluate` runs side by side, per brief: what a reader sees before and after
a change (or with and without an adapter). Score both with today's checks first:

    .venv/bin/python manage.py evaluate --rescore before.json --save before.json > /dev/null
    .venv/bin/python bench/compare_evaluations.py before.json after.json [--labels before after]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from agents import gate  # noqa: E402

KEYS = [("outline", "outline", "{}"), ("S_l", "S_l", "{:.1f}"), ("echo", "echo", "{:.0f}"),
        ("meta", "meta %", "{:.1f}"),
        ("junk", "junk %", "{:.2f}"), ("repeated_4grams", "rep. 4-grams %", "{:.1f}"),
        ("off_brief", "off-brief %", "{:.1f}"), ("subtopics_covered", "subtopics %", "{:.0f}"),
        ("duplicate_headings", "dup. headings", "{:.0f}"), ("cited", "cited %", "{:.1f}"),
        ("supported", "supported %", "{:.0f}"), ("cut", "cut while writing %", "{:.1f}"),
        ("defects", "summed defects %", "{:.1f}"), ("seconds", "seconds", "{:.0f}")]


def summed_defects(entry: dict) -> float:
    """The gate's summed defects (agents/gate.py) of a saved article."""
    return gate.summed_defects(entry["scores"], entry["sections"])


def cell(value, fmt: str) -> str:
    return "–" if value is None else fmt.format(value)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("files", type=Path, nargs="+")
    parser.add_argument("--labels", nargs="*", default=None)
    parser.add_argument("--system", default="team")
    args = parser.parse_args()
    labels = args.labels or [f.stem for f in args.files]
    runs = []
    for path in args.files:
        entries = [e for e in json.loads(path.read_text()) if e["system"] == args.system]
        runs.append({e["brief"]: e | {"scores": e["scores"] | {"outline": e["outline"], "defects": summed_defects(e)}}
                     for e in entries})
    briefs = sorted(set.intersection(*(set(run) for run in runs)))
    print("| # | brief | run | " + " | ".join(title for _, title, _ in KEYS) + " |")
    print("|" + "---|" * (3 + len(KEYS)))
    for number in briefs:
        for label, run in zip(labels, runs, strict=True):
            entry = run[number]
            print(f"| {number} | {entry['topic'][:36]} | {label} | "
                  + " | ".join(cell(entry["scores"].get(key), fmt) for key, _, fmt in KEYS) + " |")
    for label, run in zip(labels, runs, strict=True):
        scores = [run[n]["scores"] for n in briefs]
        means = []
        for key, _, fmt in KEYS:
            if key == "outline":
                means.append(f"{sum(s['outline'] == 'fallback' for s in scores)} fallback")
                continue
            present = [s[key] for s in scores if s.get(key) is not None]
            means.append(cell(sum(present) / len(present) if present else None, fmt))
        print(f"| | **mean of {len(briefs)}** | {label} | " + " | ".join(means) + " |")


if __name__ == "__main__":
    main()
