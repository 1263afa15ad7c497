"""Whatever a model writes, the chief editor's outline ends up valid: parsed leniently, repaired,
or built from the brief. A fuzz test throws text, JSON and near-JSON of many shapes at it."""

from __future__ import annotations

import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agents.outline import (
    Brief,
    InvalidOutline,
    PlannedSection,
    check_outline,
    fallback_outline,
    parse_outline,
    repair_outline,
    split_for_writers,
)

BRIEF = Brief(topic="Coastal birds of the North Sea", target_words=1500, audience="walkers")


def plan_from(text: str, brief: Brief = BRIEF) -> list[PlannedSection]:
    try:
        return repair_outline(parse_outline(text), brief)
    except InvalidOutline:
        return fallback_outline(brief)


def _flatten(sections, depth=1):
    for s in sections:
        yield s, depth
        yield from _flatten(s.children, depth + 1)


@pytest.mark.parametrize("text, headings", [
    ('```json\n[{"heading": "Gulls", "words": 500}, {"heading": "Terns", "words": 500}]\n```',
     ["Gulls", "Terns"]),
    ('Here is the outline: {"sections": [{"title": "1. Gulls", "goal": "g"}, {"title": "Terns",}],}',
     ["Gulls", "Terns"]),
    ("[{'heading': 'Puffins'}, {'heading': 'Gannets'}]", ["Puffins", "Gannets"]),
    ("1. Introduction (200 words)\n2. Gulls: where they nest (600 words)\n2.1 Herring gull\n"
     "2.2 Black-headed gull\n3. Conclusion - wrap up", ["Introduction", "Gulls", "Conclusion"]),
    ("## Gulls\n- loud\n- clever\n## Terns\n- fast", ["Gulls", "Terns"]),
    ("Title: Birds\n\nSection 1: Gulls\nText.\n\nSection 2: Terns\nMore text.", ["Gulls", "Terns"]),
    ('[{"heading": "Gulls"}, {"heading": "gulls"}, {"heading": "***"}, {"heading": "Terns"}]',
     ["Gulls", "Terns"]),
])
def test_common_shapes_are_read(text, headings):
    outline = plan_from(text)
    assert [s.heading for s in outline] == headings
    check_outline(outline, BRIEF.target_words)


def test_sentences_in_a_list_are_not_taken_for_headings():
    text = ("1. The importance of sleep cannot be overstated in a world where everyone is busy all the time.\n"
            "2. Sleep and memory\n3. How much sleep we need")
    assert [s.heading for s in plan_from(text)] == ["Sleep and memory", "How much sleep we need"]


def test_budgets_follow_the_model_where_given_and_sum_to_the_target():
    outline = plan_from('[{"heading": "A", "words": "about 300 words"}, {"heading": "B", "words": 900},'
                        ' {"heading": "C"}]')
    words = [s.words for s in outline]
    assert sum(words) == 1500 and words[1] > words[0]


def test_subsections_add_up_to_their_parent():
    outline = plan_from("1. Gulls (1000 words)\n1.1 Herring gull\n1.2 Common gull\n2. Terns (500 words)")
    gulls = outline[0]
    assert [c.heading for c in gulls.children] == ["Herring gull", "Common gull"]
    assert sum(c.words for c in gulls.children) == gulls.words


def test_junk_falls_back_to_an_outline_from_the_brief():
    outline = plan_from("I am sorry, I cannot help with that.")
    assert outline[0].heading == "Introduction" and outline[-1].heading == "Conclusion"
    check_outline(outline, 1500)


def test_the_fallback_uses_source_titles():
    brief = Brief(topic="Seabirds", target_words=1200, source_titles=["Puffin colonies", "Gannet diving"])
    headings = [s.heading for s in fallback_outline(brief)]
    assert headings[1:3] == ["Puffin colonies", "Gannet diving"]


def test_long_sections_are_split_for_writers_and_still_add_up():
    outline = plan_from('[{"heading": "Gulls", "words": 1200, "key_points": ["Nesting", "Feeding", "Calls"]},'
                        ' {"heading": "Terns", "words": 300}]')
    split_for_writers(outline, max_words=500)
    assert [c.heading for c in outline[0].children] == ["Nesting", "Feeding", "Calls"]
    assert all(leaf.words <= 500 for s in outline for leaf in s.leaves())
    check_outline(outline, 1500)


def test_a_long_section_without_names_for_its_parts_stays_whole_never_numbered():
    outline = plan_from('[{"heading": "Gulls", "words": 1200, "key_points": ["is not an easy task and it"]},'
                        ' {"heading": "Terns", "words": 300}]')
    split_for_writers(outline, max_words=500)
    assert not outline[0].children and outline[0].words > 500
    assert not any("of 2" in leaf.heading or "of 3" in leaf.heading for s in outline for leaf in s.leaves())


section = st.recursive(
    st.fixed_dictionaries({"heading": st.text(max_size=40)},
                          optional={"words": st.one_of(st.integers(-100, 10**6), st.text(max_size=8), st.none()),
                                    "goal": st.text(max_size=30),
                                    "key_points": st.one_of(st.lists(st.text(max_size=20), max_size=8),
                                                            st.text(max_size=20))}),
    lambda children: st.fixed_dictionaries({"heading": st.text(max_size=20),
                                            "children": st.lists(children, max_size=4)}),
    max_leaves=12,
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(sections=st.lists(section, max_size=12), target=st.integers(100, 20_000),
       mangle=st.sampled_from(["json", "truncate", "fenced", "text"]))
def test_fuzz_any_model_output_becomes_a_valid_outline(sections, target, mangle):
    text = json.dumps(sections)
    if mangle == "truncate":
        text = text[: len(text) // 2]
    elif mangle == "fenced":
        text = f"Sure! ```json\n{text},\n``` Hope this helps."
    elif mangle == "text":
        text = "\n".join(f"{i}. {s['heading']}" for i, s in enumerate(sections, 1))
    brief = Brief(topic="Anything", target_words=target)
    outline = plan_from(text, brief)
    check_outline(outline, target)
    assert all(depth <= 3 for _, depth in _flatten(outline))


@settings(max_examples=200, deadline=None)
@given(text=st.text(max_size=400))
def test_fuzz_arbitrary_text_never_raises(text):
    check_outline(plan_from(text), BRIEF.target_words)


def test_near_duplicate_headings_are_dropped_and_a_short_article_gets_few_sections():
    headings = ["Sleep is essential for health", "Sleep is a key factor in a healthy lifestyle",
                "Sleep is a key factor in maintaining a healthy lifestyle", "Dreams", "Sleep and memory",
                "How much sleep we need", "Better sleep habits", "Naps", "Sleep around the world"]
    sections = repair_outline([PlannedSection(h) for h in headings], Brief(topic="Sleep", target_words=500))
    names = [s.heading for s in sections]
    assert "Sleep is a key factor in maintaining a healthy lifestyle" not in names
    assert names == ["Sleep is essential for health", "Sleep is a key factor in a healthy lifestyle", "Dreams",
                     "Sleep and memory", "How much sleep we need"]  # 500 words: five sections at most
    check_outline(sections, 500)
