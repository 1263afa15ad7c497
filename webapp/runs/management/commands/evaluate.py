"""Score the agent team against a single agent on briefs (training/data/briefs.json, or your own
with --briefs): length, headings, and what a reader sees (prompt echoes, meta sentences, junk
words, repetition across sections, off-brief sentences, subtopics covered, duplicate headings,
citations and their support)."""

from __future__ import annotations

import functools
import json
import threading
from pathlib import Path

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from agents import coordinator, evaluation, quality
from agents.llm.types import AdapterSpec
from agents.outline import Brief
from agents.retrieval import PassageIndex, default_embedder
from agents.roles import reader_checks, section_writer
from webapp import llm
from webapp.documents.extract import chunk_text, normalise
from webapp.registry import services as registry

BRIEFS = settings.BASE_DIR / "training" / "data" / "briefs.json"

COLUMNS = [("words", "words", "{:.0f}"), ("S_l", "S_l", "{:.1f}"), ("heading_recall", "heading recall", "{:.1f}"),
           ("echo", "echo sentences", "{:.0f}"), ("meta", "meta %", "{:.1f}"), ("junk", "junk words %", "{:.2f}"),
           ("repeated_4grams", "repeated 4-grams %", "{:.1f}"), ("off_brief", "off-brief %", "{:.1f}"),
           ("subtopics_covered", "subtopics covered %", "{:.0f}"),
           ("duplicate_headings", "duplicate headings", "{:.0f}"), ("cited", "cited sentences %", "{:.1f}"),
           ("supported", "supported citations %", "{:.0f}"), ("cut", "sentences cut while writing %", "{:.1f}"),
           ("tokens_per_word", "writer tokens per kept word", "{:.2f}"),
           # Measures that share no rule with the writers' filter (evaluation.independent_scores)
           ("meta_classifier", "meta % (classifier)", "{:.1f}"), ("junk_strict", "junk words % (strict)", "{:.2f}"),
           ("loops", "sentences repeated in their section", "{:.0f}"), ("heading_quality", "headings ok %", "{:.0f}"),
           ("unsupported_claims", "unsupported claims %", "{:.1f}"), ("aspects_covered", "aspects covered %", "{:.0f}"),
           # The reviewer against those measures' defect sentences, and how much of the text it flags
           ("reviewer_recall", "reviewer recall %", "{:.0f}"), ("reviewer_flagged", "sentences flagged %", "{:.0f}"),
           ("seconds", "seconds", "{:.0f}")]


class Command(BaseCommand):
    help = "Write each brief with the hierarchical pipeline and with one agent, and print their scores."

    def add_arguments(self, parser) -> None:
        parser.add_argument("--briefs", type=Path, default=BRIEFS,
                            help="a JSON list of {topic, words, audience?, notes?, reference?: [headings], "
                                 "sources?: folder of .md/.txt files relative to the file}")
        parser.add_argument("--limit", type=int, default=0, help="only the first N briefs")
        parser.add_argument("--only", type=int, nargs="*", default=None, help="only these briefs (0-based)")
        parser.add_argument("--half", choices=["dev", "test"],
                            help="only the development or the test half of the briefs (evaluation.halves: split "
                                 "once by a fixed seed within each domain; tune on dev, judge on test)")
        parser.add_argument("--no-baseline", action="store_true", help="skip the single-agent baseline")
        parser.add_argument("--systems", nargs="+", choices=["team", "single"], default=["team", "single"],
                            help="which to write: the team, the single-agent baseline, or both (the default)")
        parser.add_argument("--save", type=Path, help="also write every score and text to this JSON file")
        parser.add_argument("--writer-adapter", type=Path,
                            help="a writer LoRA adapter folder (say a self-trained one) for the team's writers")
        parser.add_argument("--filters", nargs="*", choices=sorted(quality.KINDS), default=sorted(quality.KINDS),
                            help="the defect kinds the team's writers cut as they write (all by default; "
                                 "--filters with none named: none, to score what the model itself writes)")
        parser.add_argument("--rescore", type=Path,
                            help="write nothing: score again the articles an earlier --save kept (same briefs file)")

    def handle(self, *args, briefs: Path, limit: int, only: list[int] | None, no_baseline: bool, half: str | None,
               save: Path | None, rescore: Path | None, writer_adapter: Path | None = None,
               systems: list[str] | None = None, filters: list[str] | None = None, **options) -> None:
        items = _load(briefs)
        if half:
            only = [n for n in evaluation.halves(items)[half] if only is None or n in only]
        chosen = [(n, item) for n, item in enumerate(items) if only is None or n in only][: limit or None]
        registry.migrate_if_fresh()  # the registry names the models (a fresh data folder has no tables yet)
        judges = (default_embedder().embed, quality.default_lexicon())
        systems = [name for name in systems or ["team", "single"] if not (no_baseline and name == "single")]
        if rescore is not None:
            saved = json.loads(rescore.read_text())
            systems = list(dict.fromkeys(entry["system"] for entry in saved))
            rows = [self._rescore(briefs, items, entry, judges) for entry in saved]
            if save:
                save.write_text(json.dumps(saved, indent=1))
        else:
            adapter = AdapterSpec(f"writer-{writer_adapter.name}", str(writer_adapter)) if writer_adapter else None
            rows = self._write(briefs, chosen, systems, adapter, quality.KINDS if filters is None else
                               frozenset(filters), judges, save)
        self._print(rows, systems)

    def _rescore(self, briefs: Path, items: list[dict], entry: dict, judges: tuple) -> tuple:
        """Score a saved article again (in place), keeping what only the writing could count."""
        item = items[entry["brief"]]
        brief, index = _brief(item), _sources(briefs, item)
        passages = {int(k): v for k, v in entry["passages"].items()} if entry.get("passages") else None
        cost = entry["scores"].get("tokens_per_word")
        entry["scores"] = _scores(item, brief, [tuple(s) for s in entry["sections"]], entry["headings"],
                                  entry["scores"]["seconds"], *judges, passages if index else None,
                                  " ".join(index.passages) if index else "", entry.get("lead", ""))
        entry["scores"]["cut"] = _cut_share(entry.get("cut", []), entry["sections"]) \
            if entry["system"] == "team" else None
        entry["scores"]["tokens_per_word"] = cost
        return (entry["brief"], item["topic"][:40], brief.target_words, entry["system"], entry["outline"],
                entry["scores"])

    def _write(self, briefs: Path, chosen: list[tuple[int, dict]], systems: list[str], adapter: AdapterSpec | None,
               filters: frozenset[str], judges: tuple, save: Path | None) -> list[tuple]:
        """Write every chosen brief with every system and score it; saved after each article."""
        engine = _Counted(llm.get_engine())
        # The team as a run writes (the reviewer's proposals change no text until a person
        # accepts one, so the scores leave it out), and the single-agent baseline.
        writers = {"team": functools.partial(coordinator.write_article, review_article=False, writer_adapter=adapter,
                                             filters=filters),
                   "single": coordinator.single_agent}
        rows, saved = [], []
        for number, item in chosen:
            brief, index = _brief(item), _sources(briefs, item)
            for name in systems:
                engine.reset()
                article = writers[name](engine, brief, passages=index)
                scores = _scores(item, brief, article.sections, article.headings, article.seconds, *judges,
                                 article.extra.get("passages") if index else None,
                                 " ".join(index.passages) if index else "", article.lead)
                kept = sum(len(text.split()) for _, text in article.sections)
                if name == "team":
                    scores["cut"] = _cut_share(article.extra.get("cut", []), article.sections)
                    scores["tokens_per_word"] = engine.writer_tokens / kept if kept else None
                rows.append((number, item["topic"][:40], brief.target_words, name, article.outline_path, scores))
                saved.append({"brief": number, "topic": item["topic"], "system": name,
                              "outline": article.outline_path, "scores": scores, "title": article.title,
                              "lead": article.lead, "sections": article.sections, "headings": article.headings,
                              "passages": article.extra.get("passages") if index else None,
                              "cut": article.extra.get("cut", [])})
                self.stderr.write(f"{name} {item['topic'][:40]}: {scores}")
                if save:
                    save.write_text(json.dumps(saved, indent=1))
        return rows

    def _print(self, rows: list[tuple], systems: list[str]) -> None:
        header = "| # | brief | target | system | outline | " + " | ".join(title for _, title, _ in COLUMNS) + " |"
        self.stdout.write(header + "\n|" + "---|" * (5 + len(COLUMNS)))
        for number, topic, target, name, path, scores in rows:
            self.stdout.write(f"| {number} | {topic} | {target} | {name} | {path} | "
                              + " | ".join(_cell(scores.get(key), fmt) for key, _, fmt in COLUMNS) + " |")
        for name in systems:
            mine = [scores for *_, system, _, scores in rows if system == name]
            fallbacks = sum(path == "fallback" for *_, system, path, _ in rows if system == name)
            self.stdout.write(f"| | **overall** | | {name} | {fallbacks} fallback | "
                              + " | ".join(_cell(_mean([s.get(key) for s in mine]), fmt) for key, _, fmt in COLUMNS)
                              + " |")
        self.stdout.write("\nMeans over the briefs where a score applies (– where none): subtopics only where the "
                          "brief lists some, citations only with sources (each writer of the team gets the 3 "
                          "passages nearest its section, the single agent the 5 nearest the topic). Echo sentences "
                          "and duplicate headings are counts per article. Sentences cut while writing: the share of "
                          "the team's generated sentences the writers' filter removed (what the model got wrong). "
                          "Reviewer recall: of the sentences the independent measures count as defects, the share "
                          "the reviewer proposes a change to (it reads with the same detectors, so this is what "
                          "reaches people, not agreement with a person: bench/reviewer_recall.py). By kind:")
        for name in systems:
            mine = [scores for *_, system, _, scores in rows if system == name]
            kinds = ", ".join(f"{kind} {_cell(_mean([s.get(f'reviewer_recall_{kind}') for s in mine]), '{:.0f}')}"
                              for kind in ("meta", "repeated", "off-brief", "junk", "claim"))
            self.stdout.write(f"- {name}: {kinds}")


def _load(briefs: Path) -> list[dict]:
    try:
        items = json.loads(briefs.read_text())
    except (OSError, ValueError) as error:
        raise CommandError(f"{briefs}: {error}") from None
    if not isinstance(items, list) or not all(isinstance(i, dict) and i.get("topic") for i in items):
        raise CommandError(f"{briefs}: expected a JSON list of briefs, each with a topic")
    return items


class _Counted:
    """The engine, counting the tokens the section writers generate (every candidate and every
    round, kept or not): tokens generated per kept word is what the writing costs."""

    def __init__(self, engine):
        self.engine, self.writer_tokens = engine, 0
        self._lock = threading.Lock()

    def reset(self) -> None:
        self.writer_tokens = 0

    def stream(self, requests, cancel=None):
        for delta in self.engine.stream(requests, cancel=cancel):
            if delta.finished and delta.request_id.startswith(f"{section_writer.ROLE}-"):
                with self._lock:
                    self.writer_tokens += delta.completion_tokens
            yield delta


def _brief(item: dict) -> Brief:
    return Brief(topic=item["topic"], target_words=int(item.get("words", 1500)), audience=item.get("audience", ""),
                 notes=item.get("notes", ""))


def _sources(briefs: Path, item: dict) -> PassageIndex | None:
    return _index(briefs.parent / item["sources"]) if item.get("sources") else None


def _scores(item: dict, brief: Brief, sections: list, headings: list[str], seconds: float, embed,
            lexicon: quality.Lexicon, passages: dict | None, sources_text: str, lead: str = "") -> dict:
    words = len(lead.split()) + sum(len(text.split()) for _, text in sections)  # the finisher's lead counts
    scores = {"words": words, "S_l": evaluation.length_score(words, brief.target_words),
              "heading_recall": evaluation.heading_soft_recall(headings, item["reference"], embed)
              if item.get("reference") else None, "seconds": seconds}
    scores |= evaluation.reader_scores(brief, sections, headings, embed, lexicon, passages, sources_text,
                                       item.get("aspects"))
    return scores | _reviewed(brief, sections, headings, embed, lexicon, passages, sources_text)


def _reviewed(brief: Brief, sections: list, headings: list[str], embed, lexicon: quality.Lexicon,
              passages: dict | None, sources_text: str) -> dict:
    """What the reviewer (every check but the LLM's transitions) finds of the sentences the
    independent measures count as defects, and the share of all sentences it flags."""
    known = evaluation.measured_known(brief, sources_text, headings)
    defects = evaluation.reader_defects(brief, [tuple(s) for s in sections], embed, lexicon, known, passages)
    proposals = coordinator.review(None, brief.topic, [(str(i), h, t) for i, (h, t) in enumerate(sections)],
                                   known=coordinator.known_text(brief, [sources_text]),
                                   judges=reader_checks.Judges.default())
    said = sum(len(quality.sentences(text)) for _, text in sections)
    flagged = {(p.section_key, p.original) for p in proposals if p.kind not in ("consistency", "transition")}
    return evaluation.reviewer_recall(defects, [(int(p.section_key), p.original) for p in proposals]) | {
        "reviewer_flagged": 100 * len(flagged) / max(1, said)}


def _cut_share(cut: list, sections: list) -> float:
    """Of the sentences the writers wrote, the share their filter cut (echo, meta, junk, off the
    brief): what the model gets wrong before the filter, the rate self-training should lower."""
    kept = sum(len(quality.sentences(text)) for _, text in sections)
    return 100 * len(cut) / max(1, len(cut) + kept)


def _mean(values: list) -> float | None:
    present = [v for v in values if v is not None]
    return sum(present) / len(present) if present else None


def _cell(value, fmt: str) -> str:
    return "–" if value is None else fmt.format(value)


def _index(folder: Path) -> PassageIndex:
    texts = [path.read_text() for path in sorted(folder.iterdir()) if path.suffix in (".md", ".txt")]
    return PassageIndex([chunk.text for text in texts for chunk in chunk_text(normalise(text), size=600)])
