"""Score the agent team against a single agent on the briefs in training/data/briefs.json."""

from __future__ import annotations

import functools
import json
from pathlib import Path

from django.conf import settings
from django.core.management.base import BaseCommand

from agents import coordinator, evaluation
from agents.outline import Brief
from agents.retrieval import PassageIndex, default_embedder
from webapp import llm
from webapp.documents.extract import chunk_text, normalise

BRIEFS = settings.BASE_DIR / "training" / "data" / "briefs.json"


class Command(BaseCommand):
    help = "Write each brief with the hierarchical pipeline and with one agent, and print their scores."

    def add_arguments(self, parser) -> None:
        parser.add_argument("--briefs", type=Path, default=BRIEFS)
        parser.add_argument("--limit", type=int, default=0, help="only the first N briefs")
        parser.add_argument("--no-baseline", action="store_true", help="skip the single-agent baseline")

    def handle(self, *args, briefs: Path, limit: int, no_baseline: bool, **options) -> None:
        items = json.loads(briefs.read_text())[: limit or None]
        engine = llm.get_engine()
        embed = default_embedder().embed
        # The team as a run writes (the reviewer's proposals change no text until a person
        # accepts one, so the scores leave it out), and the single-agent baseline.
        systems = [("team", functools.partial(coordinator.write_article, review_article=False))]
        systems += [] if no_baseline else [("single", coordinator.single_agent)]
        rows, totals = [], {name: [] for name, _ in systems}
        for item in items:
            brief = Brief(topic=item["topic"], target_words=item["words"], audience=item.get("audience", ""))
            index = _index(briefs.parent / item["sources"]) if item.get("sources") else None
            for name, write in systems:
                article = write(engine, brief, passages=index)
                scores = {
                    "words": article.words,
                    "S_l": evaluation.length_score(article.words, brief.target_words),
                    "heading_recall": evaluation.heading_soft_recall(article.headings, item["reference"], embed),
                    "repetition": evaluation.repetition([text for _, text in article.sections]),
                    "citations": evaluation.citation_share(article.text) if index else None,
                    "seconds": article.seconds,
                }
                totals[name].append(scores)
                rows.append((item["topic"][:40], brief.target_words, name, article.outline_path, scores))
                self.stderr.write(f"{name} {item['topic'][:40]}: {scores}")
        self.stdout.write("| brief | target | system | outline | words | S_l | heading recall | repetition % | "
                          "cited sentences % | seconds |\n|---|---|---|---|---|---|---|---|---|---|")
        for topic, target, name, path, s in rows:
            self.stdout.write(f"| {topic} | {target} | {name} | {path} | {s['words']} | {s['S_l']:.1f} | "
                              f"{s['heading_recall']:.1f} | {s['repetition']:.1f} | {_cited(s['citations'])} | "
                              f"{s['seconds']:.0f} |")
        for name, scores in totals.items():
            mean = {key: sum(s[key] for s in scores) / len(scores) for key in scores[0] if key != "citations"}
            cited = [s["citations"] for s in scores if s["citations"] is not None]
            self.stdout.write(f"| **overall** | | {name} | | {mean['words']:.0f} | {mean['S_l']:.1f} | "
                              f"{mean['heading_recall']:.1f} | {mean['repetition']:.1f} | "
                              f"{_cited(sum(cited) / len(cited) if cited else None)} | {mean['seconds']:.0f} |")
        self.stdout.write("\nCited sentences are scored on the briefs that have sources (– elsewhere): each "
                          "writer of the team gets the 3 passages nearest its section, the single agent the 5 "
                          "nearest the topic.")


def _cited(share: float | None) -> str:
    return "–" if share is None else f"{share:.1f}"


def _index(folder: Path) -> PassageIndex:
    texts = [path.read_text() for path in sorted(folder.iterdir()) if path.suffix in (".md", ".txt")]
    return PassageIndex([chunk.text for text in texts for chunk in chunk_text(normalise(text), size=600)])
