"""The writers' filters (agents/quality.py) on real outputs of the bundled model: every recorded
defect is cut, every good sentence kept, and a recorded section streamed token by token through
the sentence gate comes out without its defects, its good sentences intact and its citations
checked against the passages."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from agents import quality
from agents.citations import SUPPORT, Support
from agents.outline import Brief
from agents.retrieval import default_embedder
from agents.roles import section_writer
from agents.roles.section_writer import SectionTask

FIXTURE = json.loads((Path(__file__).parent / "fixtures" / "bundled_writer_outputs.json").read_text())
SLEEP = (Path(__file__).parent.parent / "training" / "data" / "sources" / "sleep" / "sleep-facts.md").read_text()
BRIEF = Brief(topic=FIXTURE["brief"]["topic"], target_words=500)
TASK = SectionTask("1", "Background", 150, goal="Explain what sleep does for the body and the mind.",
                   passages=[p for p in SLEEP.split("\n\n")[1:4]])


@pytest.fixture(scope="module")
def checks() -> quality.Checks:
    return section_writer.checks_for(BRIEF, "1. Background (150 words)\n2. Better sleep habits (150 words)", TASK)


@pytest.mark.parametrize("kind", ["echo", "meta", "junk"])
def test_each_recorded_defect_is_cut(checks, kind):
    missed = [s for s in FIXTURE[kind] if checks.defect(s) is None]
    assert not missed, missed
    assert all(checks.defect(s) == kind for s in FIXTURE[kind] if kind != "junk"), \
        [(s, checks.defect(s)) for s in FIXTURE[kind] if checks.defect(s) != kind]


def test_good_sentences_are_kept(checks):
    assert [(s, checks.defect(s)) for s in FIXTURE["good"] if checks.defect(s)] == []


def test_a_recorded_section_streamed_token_by_token_loses_its_defects_only(checks):
    text = FIXTURE["recorded_section"]
    gate = quality.SentenceGate(checks)
    pieces = [text[i:i + 3] for i in range(0, len(text), 3)]  # about a token each
    shown = "".join(gate.feed(piece) for piece in pieces) + gate.close()
    cut = [sentence for _, sentence in gate.cut]
    assert any(s.startswith("[1] risk of obesity") for s in cut)  # a fragment copied from a passage
    assert any("I made changes" in s for s in cut) and any("This part covers" in s for s in cut)
    for sentence in ("Sleep is a critical component in maintaining overall well-being",
                     "It plays an important role in the body's ability to regulate emotions"):
        assert sentence in shown
    assert not any(checks.defect(s) for s in quality.sentences(shown))
    # Every citation left points at a passage that supports its sentence.
    support = Support(TASK.passages, default_embedder().embed)
    for sentence in quality.sentences(shown):
        for number in map(int, __import__("re").findall(r"\[(\d+)\]", sentence)):
            assert support.scores(sentence)[number] >= SUPPORT, sentence


def test_the_lexicon_knows_real_words_and_not_junk():
    lexicon = quality.default_lexicon()
    for word in ("lighthouses", "containerization", "seaborne", "intermodal", "Ptolemy", "Fresnel", "don't",
                 "SymPy", "Coruña"):
        assert lexicon.knows(word), word
    for word in ("Pharosofreamadefineetalenabdellaselite", "Khronotakopanes", "Ancestrallexandrios"):
        assert not lexicon.knows(word), word
    heldout = (Path(__file__).parent.parent / "training" / "data" / "heldout.txt").read_text()
    assert lexicon.junk(heldout) == []  # real prose: no false alarms
