"""The thresholds of the article checks, measured on labelled data, all in one run:

    .venv/bin/python bench/calibrate.py      # about a minute

1. Citation support (agents/citations.SUPPORT) on training/data/labelled/citation_support.json:
   precision and recall of "cite" at each threshold; SUPPORT is the lowest with precision 1.0.
2. Duplicate headings (chief_editor.DUPLICATE) on training/data/labelled/heading_pairs.json.
3. Off-brief sentences (evaluation.OFF_BRIEF): each source file's sentences against their own
   brief's topic (on the brief) and the other briefs' topics (off it).
4. Junk words (agents/quality): the share of words of real prose (held-out text and the sources)
   the lexicon calls junk: false alarms, which must stay under the 0.1% target.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "webapp.settings")

from agents import citations, evaluation, quality  # noqa: E402
from agents.retrieval import default_embedder  # noqa: E402
from agents.roles import chief_editor  # noqa: E402

DATA = ROOT / "training" / "data"


def paragraphs(path: Path) -> list[str]:
    return [p.strip() for p in path.read_text().split("\n\n") if p.strip() and not p.startswith("#")]


def table(judged: list[tuple[float, bool]], thresholds: list[float], current: float, name: str) -> None:
    print(f"| {name} threshold | precision | recall | |\n|---|---|---|---|")
    for threshold in thresholds:
        precision, recall = citations.precision_recall(judged, threshold)
        mark = "in use" if abs(threshold - current) < 1e-9 else ""
        print(f"| {threshold:.2f} | {precision:.2f} | {recall:.2f} | {mark} |")
    print()


def main() -> None:
    embed = default_embedder().embed
    items = json.loads((DATA / "labelled" / "citation_support.json").read_text())["items"]
    triples = [(sentence, paragraphs(DATA / "sources" / source)[index], bool(label))
               for source, index, sentence, label in items]
    judged = citations.judge(triples, embed)
    print(f"## Citation support: {len(items)} labelled sentences ({sum(label for *_, label in items)} supported)\n")
    table(judged, [0.5, 0.55, 0.58, 0.6, 0.62, 0.65, 0.7, 0.75], citations.SUPPORT, "support")

    pairs = json.loads((DATA / "labelled" / "heading_pairs.json").read_text())["pairs"]
    left, right = embed([p[0] for p in pairs]), embed([p[1] for p in pairs])
    judged = [(float(s), bool(p[2])) for s, p in zip((left * right).sum(1), pairs, strict=True)]
    print(f"## Duplicate headings: {len(pairs)} labelled pairs ({sum(p[2] for p in pairs)} duplicates)\n")
    table(judged, [0.6, 0.65, 0.7, 0.74, 0.78, 0.8, 0.85], chief_editor.DUPLICATE, "duplicate")

    briefs = [b for b in json.loads((DATA / "briefs.json").read_text()) if b.get("sources")]
    topics = embed([b["topic"] for b in briefs])
    on, off = [], []
    for index, brief in enumerate(briefs):
        found = [s for path in sorted((DATA / brief["sources"]).iterdir()) for p in paragraphs(path)
                 for s in quality.sentences(p)]
        similarity = embed(found) @ topics.T
        on += similarity[:, index].tolist()
        off += [float(v) for row in similarity for j, v in enumerate(row) if j != index]
    print(f"## Off-brief sentences: {len(on)} source sentences against their own brief, {len(off)} against others\n")
    print("| threshold | on-brief sentences called off | off-brief sentences called on | |\n|---|---|---|---|")
    for threshold in (0.1, 0.15, 0.2, 0.25, 0.3):
        wrong_on = sum(v < threshold for v in on) / len(on)
        wrong_off = sum(v >= threshold for v in off) / len(off)
        mark = "in use" if abs(threshold - evaluation.OFF_BRIEF) < 1e-9 else ""
        print(f"| {threshold:.2f} | {100 * wrong_on:.1f}% | {100 * wrong_off:.1f}% | {mark} |")
    print()

    lexicon = quality.default_lexicon()
    prose = [(DATA / "heldout.txt").read_text()]
    prose += [p for b in briefs for path in sorted((DATA / b["sources"]).iterdir()) for p in paragraphs(path)]
    words = sum(len(quality.WORD.findall(t)) for t in prose)
    junk = [w for t in prose for w in lexicon.junk(t)]
    print(f"## Junk words in real prose: {len(junk)} of {words} words ({100 * len(junk) / words:.2f}%): {junk}")


if __name__ == "__main__":
    main()
