"""The reviewer's anchors name the same characters in the server's pycrdt and in the editor's
Yjs. pycrdt 0.14 counts a sticky index in UTF-8 bytes inside a block, Yjs in UTF-16 units: on
model text with a curly quote or a dash before the sentence, the page showed an unchanged
suggestion as "Outdated: the text it would change was edited"."""

from __future__ import annotations

import base64
import json
import shutil
import subprocess
from pathlib import Path

import pytest
from pycrdt import Doc

from webapp.documents import crdt

ROOT = Path(__file__).resolve().parent.parent
NODE_MODULES = ROOT / "frontend" / "node_modules"
PEER = Path(__file__).parent / "support" / "yjs_peer.cjs"

# Written in three pieces by two peers, so the section holds several blocks of two clients.
PIECES = ["Tides rise — “twice” a day, it’s said. ",
          "Café owners 😀 watch them. ",
          "The Moon pulls the sea — hard, and the Sun helps a little."]
SPANS = ["The Moon pulls the sea — hard, and the Sun helps a little.", "Café owners 😀 watch them.",
         "“twice”", "it’s said.", "T"]


def _shared() -> Doc:
    doc, other = Doc(), Doc()
    crdt.set_text(doc, "k", PIECES[0])
    other.apply_update(doc.get_update())
    crdt.set_text(other, "k", PIECES[0] + PIECES[1])
    doc.apply_update(other.get_update(doc.get_state()))
    crdt.set_text(doc, "k", "".join(PIECES))
    return doc


def _anchors(doc: Doc) -> list[dict]:
    text = crdt.section_text(doc, "k")
    anchors = crdt.Anchors(doc, "k")
    return [anchors.make(text.index(span), text.index(span) + len(span)) for span in SPANS]


def test_the_server_finds_its_own_anchors_through_non_ascii_text():
    doc = _shared()
    text = crdt.section_text(doc, "k")
    for span, anchor in zip(SPANS, _anchors(doc), strict=True):
        start, end = crdt.resolve(doc, "k", anchor)
        assert text[start:end] == span


NEEDS_NODE = pytest.mark.skipif(shutil.which("node") is None or not (NODE_MODULES / "yjs").is_dir(),
                                reason="needs Node and the editor's packages (make assets)")


def _in_the_editor(doc: Doc, anchors: list[dict], typed: str) -> dict:
    """What the editor's Yjs makes of the anchors, before and after it types `typed` first."""
    answer = subprocess.run(
        ["node", str(PEER)], input=json.dumps({"update": base64.b64encode(doc.get_update()).decode(),
                                               "name": crdt.section_name("k"), "anchors": anchors, "typed": typed}),
        capture_output=True, text=True, check=True, timeout=60, env={"NODE_PATH": str(NODE_MODULES)})
    return json.loads(answer.stdout)


@NEEDS_NODE
def test_the_editor_finds_the_servers_anchors_and_the_server_finds_them_after_the_editor_types():
    doc = _shared()
    anchors = _anchors(doc)
    typed = "Über — “note” 😀 "
    browser = _in_the_editor(doc, anchors, typed)
    assert browser["before"] == SPANS  # the page marks the sentences, none "outdated"
    assert browser["after"] == SPANS  # and keeps them marked as someone types before them

    doc.apply_update(base64.b64decode(browser["update"]))
    text = crdt.section_text(doc, "k")
    assert text.startswith(typed)
    for span, anchor in zip(SPANS, anchors, strict=True):
        start, end = crdt.resolve(doc, "k", anchor)
        assert text[start:end] == span  # accepting applies at the sentence, where it now is


def test_an_anchor_whose_characters_were_deleted_resolves_to_nothing():
    doc = _shared()
    anchors = _anchors(doc)
    crdt.set_text(doc, "other", "".join(PIECES))  # the same words in another section are not its characters
    assert crdt.resolve(doc, "other", anchors[0]) is None
    assert crdt.resolve(doc, "k", {"start": "not base64!", "end": ""}) is None
    crdt.set_text(doc, "k", PIECES[0] + PIECES[2])
    assert crdt.resolve(doc, "k", anchors[1]) is None


@NEEDS_NODE
def test_a_span_ending_in_an_emoji_or_following_a_deletion_is_found_whole_in_the_editor():
    """Two ways the ids went wrong (a claim the reviewer had just made showed as "Outdated"):
    the end of a sentence ending in an emoji stuck between its two UTF-16 halves, and a block
    left after a deletion was taken for the rest of the block before it when its clock happened
    to follow that one's by the bytes of an "é" (here "b": clock 3, and "é" at 1 is two bytes)."""
    doc = Doc()
    crdt.set_text(doc, "k", "xéab and more 😀")
    crdt.set_text(doc, "k", "xéb and more 😀")
    text = crdt.section_text(doc, "k")
    spans = ["éb", "b and", "more 😀", "😀", "x"]
    anchors = [crdt.Anchors(doc, "k").make(text.index(span), text.index(span) + len(span)) for span in spans]
    for span, anchor in zip(spans, anchors, strict=True):
        start, end = crdt.resolve(doc, "k", anchor)
        assert text[start:end] == span
    browser = _in_the_editor(doc, anchors, "😀 ")
    assert browser["before"] == spans
    assert browser["after"] == spans
