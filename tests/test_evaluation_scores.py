"""The evaluation scores behave as their definitions say."""

from __future__ import annotations

import pytest

from agents import evaluation
from agents.coordinator import single_agent, write_article
from agents.llm.types import Delta
from agents.outline import Brief
from tests.support.tiny_models import BUNDLED_TEXT_DIVERGES


@pytest.mark.parametrize("words, target, score", [
    (1500, 1500, 100.0), (6000, 1500, 0.0), (500, 1500, 0.0), (3000, 1500, 66.7), (1000, 1500, 75.0),
])
def test_length_score(words, target, score):
    assert evaluation.length_score(words, target) == pytest.approx(score, abs=0.1)


def test_repetition_counts_4grams_shared_between_sections():
    assert evaluation.repetition(["the gull is a loud bird", "terns dive for small fish"]) == 0
    shared = evaluation.repetition(["the gull is a loud bird", "the gull is a loud bird too"])
    assert shared == pytest.approx(100 * 6 / 7, abs=0.1)  # 3 + 3 of the 3 + 4 four-grams


def test_citation_share():
    share = evaluation.citation_share("Gulls nest on roofs [1]. Terns dive. Puffins burrow [2].")
    assert share == pytest.approx(66.7, abs=0.1)


def test_heading_recall_rewards_matching_headings():
    from agents.retrieval import default_embedder

    embed = default_embedder().embed
    reference = ["Gulls", "Terns"]
    assert evaluation.heading_soft_recall(["Gulls", "Terns"], reference, embed) == pytest.approx(100, abs=0.5)
    assert evaluation.heading_soft_recall(["Tax law", "Mortgages"], reference, embed) < 40


class Scripted:
    def __init__(self, answer_for):
        self.answer_for = answer_for

    def stream(self, requests, cancel=None):
        for request in requests:
            yield Delta(request.id, self.answer_for(request), finished=True, finish_reason="stop")


def test_the_pipeline_plans_then_writes_every_leaf_in_one_batch():
    batches = []

    def answer(request):
        if request.id.startswith("chief_editor"):
            return "1. Gulls: loud\n2. Terns: fast\n3. Puffins: cute"
        batches.append(request.id)
        return " ".join(f"Sentence {i} about birds here." for i in range(40))

    article = write_article(Scripted(answer), Brief(topic="Birds", target_words=600))
    assert article.headings == ["Gulls", "Terns", "Puffins"] and article.outline_path == "model-repaired"
    assert len(article.sections) == 3 and all(text for _, text in article.sections)
    assert 0.85 * 600 <= article.words <= 1.15 * 600


def test_with_the_filter_off_the_article_is_what_the_model_wrote():
    """evaluate --filters (none): how a model or an adapter is judged by its own defect rates."""
    talk = "I hope this helps you with the article about birds. "
    body = " ".join(f"Gull number {i} shouted at the fishing boats in the harbour." for i in range(40))

    def answer(request):
        return "1. Gulls: loud\n2. Terns: fast" if request.id.startswith("chief_editor") else talk + body

    filtered = write_article(Scripted(answer), Brief(topic="Birds", target_words=300), review_article=False,
                             finish_article=False)
    raw = write_article(Scripted(answer), Brief(topic="Birds", target_words=300), review_article=False,
                        finish_article=False, filters=())
    assert all(not text.startswith("I hope") for _, text in filtered.sections)
    assert sorted({kind for kind, _ in filtered.extra["cut"]}) == ["meta"]
    assert all(text.startswith(talk.strip()) for _, text in raw.sections) and raw.extra["cut"] == []


def test_the_single_agent_baseline_is_split_at_its_headings():
    text = "# Gulls\nGulls are loud.\n# Terns\nTerns dive."
    article = single_agent(Scripted(lambda r: text), Brief(topic="Birds", target_words=300))
    assert article.headings == ["Gulls", "Terns"] and article.sections[1] == ("Terns", "Terns dive.")


@pytest.mark.bundled
@BUNDLED_TEXT_DIVERGES
def test_manage_py_evaluate_prints_the_table_on_the_bundled_model(db, tmp_path, capsys, bundled_engine):
    import json

    from django.core.management import call_command

    briefs = tmp_path / "briefs.json"
    briefs.write_text(json.dumps([{"topic": "Why we sleep", "words": 200, "reference": ["Sleep", "Dreams"]}]))
    call_command("evaluate", briefs=briefs, no_baseline=True)
    out = capsys.readouterr().out
    row = next(line for line in out.splitlines() if "| Why we sleep |" in line)
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert cells[3] == "team" and int(cells[5]) > 100 and float(cells[6]) >= 50  # words, S_l
    assert cells[8] == "0"  # no sentence echoes the prompt: the writers' filter cut them
    assert "**overall**" in out


def test_reader_scores_count_what_a_reader_would_not_keep():
    from agents import quality
    from agents.retrieval import default_embedder

    embed = default_embedder().embed
    brief = Brief(topic="A walker's guide to the night sky: the Moon, planets and meteor showers", target_words=300)
    passages = ["The Moon shows phases because we see different parts of its sunlit half as it orbits the Earth."]
    sections = [
        ("The Moon", "The Moon shows phases as it orbits the Earth [1]. I hope this helps! Write the section "
                     "in about 100 words. The Moon's craters are easy to see with binoculars."),
        ("Planets", "Venus is the brightest planet in the evening sky. Jupiter shows four moons in binoculars. "
                    "Mortgage rates rose again last quarter, banks said. Saturn glows a steady yellow [1]."),
        ("Planets to see", "Venus is the brightest planet in the evening sky, after the Moon. Mars looks red."),
    ]
    scores = evaluation.reader_scores(brief, sections, [h for h, _ in sections], embed, quality.default_lexicon(),
                                      {0: passages, 1: passages, 2: passages})
    said = 10
    assert scores["echo"] == 1  # "Write the section in about 100 words."
    assert scores["meta"] == pytest.approx(200 / said)  # "I hope this helps!", and the echo is about the writing
    assert scores["off_brief"] == pytest.approx(100 / said)  # mortgages
    assert scores["subtopics_covered"] == pytest.approx(200 / 3)  # the Moon and planets; no meteor showers
    assert scores["duplicate_headings"] == 1  # "Planets" and "Planets to see"
    assert scores["repeated_4grams"] > 0  # "venus is the brightest planet..." twice
    assert scores["cited"] == pytest.approx(200 / said)
    assert scores["supported"] == 50  # [1] supports the phases, not Saturn's colour


@pytest.mark.slow
def test_manage_py_evaluate_works_on_a_fresh_data_folder(tmp_path, tiny_model_dir):
    """A new user's first `manage.py evaluate`, before `make run` ever ran: the database has no
    tables yet, and the registry is asked for the active model (it failed with "no such table:
    registry_basemodel"); the tables are created first. The tiny model stands in the bundled
    model's folder: what is tested is the way to it (the bundled model's table is the test above)."""
    import json
    import os
    import subprocess
    import sys

    from agents.llm.bundled import BUNDLED_NAME
    from tests.support.processes import ROOT

    fresh = tmp_path / "fresh"
    (fresh / "models").mkdir(parents=True)
    (fresh / "models" / BUNDLED_NAME).symlink_to(tiny_model_dir)
    briefs = tmp_path / "briefs.json"
    briefs.write_text(json.dumps([{"topic": "Why we sleep", "words": 150}]))
    env = {key: value for key, value in os.environ.items()
           if key not in ("DATABASE_URL", "DJANGO_SETTINGS_MODULE", "REDIS_URL", "SCRIPTORIUM_MODEL")}
    done = subprocess.run([sys.executable, "manage.py", "evaluate", "--briefs", str(briefs), "--systems", "team"],
                          cwd=ROOT, env=env | {"SCRIPTORIUM_DATA_DIR": str(fresh)}, capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "| Why we sleep |" in done.stdout and "**overall**" in done.stdout
