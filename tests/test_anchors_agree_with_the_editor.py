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


@pytest.mark.skipif(shutil.which("node") is None or not (NODE_MODULES / "yjs").is_dir(),
                    reason="needs Node and the editor's packages (make assets)")
def test_the_editor_finds_the_servers_anchors_and_the_server_finds_them_after_the_editor_types():
    doc = _shared()
    anchors = _anchors(doc)
    typed = "Über — “note” 😀 "
    answer = subprocess.run(
        ["node", str(PEER)], input=json.dumps({"update": base64.b64encode(doc.get_update()).decode(),
                                               "name": crdt.section_name("k"), "anchors": anchors, "typed": typed}),
        capture_output=True, text=True, check=True, timeout=60, env={"NODE_PATH": str(NODE_MODULES)})
    browser = json.loads(answer.stdout)
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
