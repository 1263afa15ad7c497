"""Citations by support (agents/citations.py) with the real MiniLM embeddings: on the labelled set
the threshold keeps the precision it was calibrated at, a model-written citation to a passage
that does not support its sentence is removed, and a supported sentence gets its passage."""

from __future__ import annotations

import json
import re
from pathlib import Path

from agents import citations, quality
from agents.outline import Brief
from agents.retrieval import default_embedder
from agents.roles.section_writer import SectionTask, WriterHooks, WriterOptions, write_sections
from tests.support.fakes import ScriptedEngine

DATA = Path(__file__).parent.parent / "training" / "data"


def _paragraphs(path: Path) -> list[str]:
    return [p.strip() for p in path.read_text().split("\n\n") if p.strip() and not p.startswith("#")]


def test_the_threshold_keeps_its_measured_precision_on_the_labelled_set():
    items = json.loads((DATA / "labelled" / "citation_support.json").read_text())["items"]
    triples = [(sentence, _paragraphs(DATA / "sources" / source)[index], bool(label))
               for source, index, sentence, label in items]
    judged = citations.judge(triples, default_embedder().embed)
    precision, recall = citations.precision_recall(judged, citations.SUPPORT)
    assert precision >= citations.SUPPORT_PRECISION, precision
    assert recall >= 0.8, recall  # and it still cites most supported sentences


def test_unsupported_citations_go_and_supported_sentences_get_one():
    passages = _paragraphs(DATA / "sources" / "lighthouses" / "lighthouse-history.md")[:4]
    support = citations.Support(passages, default_embedder().embed)
    # The model cites [1] (the Pharos) for a claim about the Fresnel lens, which [4] states.
    assert support.cite("A Fresnel lens bends the light of one lamp into a strong beam [1].") == \
        "A Fresnel lens bends the light of one lamp into a strong beam [4]."
    assert support.cite("The Pharos of Alexandria stood for over a thousand years.") == \
        "The Pharos of Alexandria stood for over a thousand years [1]."
    # Nothing supports this: no citation, and a written one is removed.
    assert support.cite("My grandmother loved the seaside in summer [2].") == \
        "My grandmother loved the seaside in summer."
    assert support.cite("Short one [3].") == "Short one."


def test_a_written_section_keeps_only_supported_citations():
    """Through the writer: the model's wrong [n] is removed, a supported sentence gets its
    number, and a stray mark left alone by tidying does not survive as text."""
    passages = _paragraphs(DATA / "sources" / "lighthouses" / "lighthouse-history.md")[:4]
    answer = ("A Fresnel lens bends the light of one lamp into a strong beam that ships see far out at sea [1]. "
              "The Pharos of Alexandria was a great tower with a fire burning at its top for sailors. "
              "Lighthouses were built by many peoples along their coasts [2]! [3]! " * 3)
    task = SectionTask("1", "Lights and lenses", 60, goal="Explain how lighthouse lights work.", passages=passages)
    written = write_sections(ScriptedEngine(*[answer] * 12), Brief("The history of lighthouses", 120),
                             "1. Lights and lenses (60 words)", [task])["1"]
    support = citations.Support(passages, default_embedder().embed)
    marks = 0
    for sentence in quality.sentences(written.text):
        assert re.search(r"[A-Za-z]", sentence), sentence
        for number in map(int, citations.MARK.findall(sentence)):
            marks += 1
            assert support.scores(sentence)[number] >= citations.SUPPORT, sentence
    assert "beam that ships see far out at sea [4]." in written.text and marks >= 2


def test_sections_with_sources_start_from_notes_their_passages_support():
    """Each passage is retold first (one request per passage, steered towards its phrases), by the
    section that ranks it highest; a note sentence no passage supports, or one that repeats an
    earlier note, is cut; the notes that stay begin the section, cited, and go out to the page
    before the writer goes on from them in its own words."""
    pharos, romans, eddystone = _paragraphs(DATA / "sources" / "lighthouses" / "lighthouse-history.md")[:3]
    first = SectionTask("a", "The Pharos of Alexandria", 80, goal="Tell the story of the Pharos.",
                        passages=[pharos, romans])
    second = SectionTask("b", "Roman and modern towers", 80, goal="Show how lighthouses spread and changed.",
                         passages=[romans, eddystone])
    own_words = ("Sailors trusted the lights they could see from far out at sea. Keepers climbed the stairs each "
                 "evening with oil for the lamps. Storms often cut a lighthouse off from the mainland for weeks. "
                 "Some towers housed whole families who kept the light burning. Harbour towns paid dues to keep "
                 "their lights in good repair. Fog horns were added where the beam alone was not enough. ")
    engine = ScriptedEngine(
        # Notes: the Pharos for "a" (its first passage); the Romans go to "b", which ranks them first.
        "The Pharos of Alexandria stood for over a thousand years before earthquakes brought it down. "
        "My grandmother loved the seaside in summer.",
        "The Romans built lighthouses across their empire, and the Tower of Hercules in Spain is still used.",
        "John Smeaton's stone tower of 1759 used interlocking granite blocks and became a model for later towers. "
        "The Romans built lighthouses across their empire, and the Tower of Hercules in Spain is still in use.",
        own_words)
    streamed: list[tuple[str, str]] = []
    written = write_sections(engine, Brief("The history of lighthouses", 160),
                             "1. The Pharos of Alexandria (80 words)\n2. Roman and modern towers (80 words)",
                             [first, second], hooks=WriterHooks(on_text=lambda key, text: streamed.append((key, text))),
                             options=WriterOptions(notes=True))
    notes = engine.batches[0]
    assert [(r.ground, r.ground_bias > 0) for r in notes] == [((pharos,), True), ((romans,), True),
                                                            ((eddystone,), True)]
    assert written["a"].text.startswith("The Pharos of Alexandria stood for over a thousand years before "
                                        "earthquakes brought it down [1].\n\n")
    assert written["b"].text.startswith("The Romans built lighthouses across their empire, and the Tower of "
                                        "Hercules in Spain is still used [1].\n\nJohn Smeaton's stone tower")
    assert ("unsupported", "My grandmother loved the seaside in summer.") in written["a"].cut
    assert [kind for kind, _ in written["b"].cut] == ["repeat"]
    # The writer goes on from its notes, and the page saw the notes first.
    for key in "ab":  # each section's first search step, without the marks (put back by support)
        request = next(r for batch in engine.batches[1:] for r in batch if r.id.startswith(f"writer-{key}-"))
        assert request.assistant_prefix.startswith(written[key].text.split(" [1]")[0] + ".")
        assert "[1]" not in request.assistant_prefix
    assert streamed[0] == ("a", written["a"].text.split("\n\n")[0] + "\n\n")
    assert "Sailors trusted the lights" in written["a"].text + written["b"].text
