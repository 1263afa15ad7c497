"""The shared document that people and agents write into at the same time.

A Yjs document (pycrdt on the server, Yjs in browsers) holds one Text per section, named
"section:<section key>", and a Map "writers" saying which sections an agent is writing (people's
editors are read-only there). Every change is an update: browsers send theirs through
DocumentCrdtConsumer, agents and forms make theirs with `Peer` here; each is stored in
CrdtUpdate and sent to the document's "crdt-<id>" channel-layer group, whose consumers pass it on
to their browsers. Updates commute, so the order in which peers receive them does not matter.

The Section rows stay the place the rest of the app reads text from: the consumer copies the
shared text into them when a person pauses typing (`documents.services.materialise`), and every other text change
(a form, an accepted suggestion, a restore, an agent's final text) goes through
`documents.services.section_save_text`, which also changes the shared text (`Peer.replace`)."""

from __future__ import annotations

import base64
import logging

from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from django.core.exceptions import ValidationError
from django.db import transaction
from pycrdt import Assoc, Doc, Map, StickyIndex, Text, merge_updates

from webapp.documents.models import CrdtState, CrdtUpdate, Document, Section

log = logging.getLogger(__name__)

EMPTY_UPDATE = b"\x00\x00"
COMPACT_EVERY = 200  # updates kept one by one before they are merged into the state
WRITERS = "writers"


def group(document_id: int) -> str:
    return f"crdt-{document_id}"


def section_name(key) -> str:
    return f"section:{key}"


def _ensure_state(document_id: int) -> None:
    """The first load builds the shared state from the Section rows, exactly once (two peers
    building it separately would each insert the same text: it would appear twice)."""
    if CrdtState.objects.filter(pk=document_id).exists():
        return
    with transaction.atomic():
        Document.objects.select_for_update().get(pk=document_id)
        if CrdtState.objects.filter(pk=document_id).exists():
            return
        doc = Doc()
        for key, text in Section.objects.filter(document_id=document_id).values_list("key", "text"):
            if text:
                doc.get(section_name(key), type=Text).insert(0, text)
        CrdtState.objects.create(document_id=document_id, state=doc.get_update())


def load(document_id: int) -> Doc:
    """The document as stored: the compacted state and every update after it."""
    _ensure_state(document_id)
    state = CrdtState.objects.get(pk=document_id)
    doc = Doc()
    doc.apply_update(bytes(state.state))
    for update in CrdtUpdate.objects.filter(document_id=document_id, id__gt=state.last_update_id) \
            .values_list("update", flat=True):
        doc.apply_update(bytes(update))
    return doc


def store(document_id: int, update: bytes, origin: str) -> None:
    row = CrdtUpdate.objects.create(document_id=document_id, update=update, origin=origin[:150])
    if row.id % COMPACT_EVERY == 0:
        compact(document_id)


@transaction.atomic
def compact(document_id: int) -> None:
    """Merge the stored updates into the state (loading stays fast however long people type)."""
    state = CrdtState.objects.select_for_update().get(pk=document_id)
    rows = list(CrdtUpdate.objects.filter(document_id=document_id, id__gt=state.last_update_id)
                .values_list("id", "update"))
    if not rows:
        return
    state.state = merge_updates(bytes(state.state), *(bytes(update) for _, update in rows))
    state.last_update_id = rows[-1][0]
    state.save(update_fields=["state", "last_update_id", "updated_at"])
    CrdtUpdate.objects.filter(document_id=document_id, id__lte=state.last_update_id).delete()


def broadcast(document_id: int, update: bytes) -> None:
    """To every consumer of the document (they apply it and pass it to their browser)."""
    try:
        async_to_sync(get_channel_layer().group_send)(group(document_id), {"type": "crdt.update", "update": update})
    except Exception as error:  # noqa: BLE001  (stored already: browsers get it when they sync)
        log.warning("could not broadcast a CRDT update of document %s (%s)", document_id, error)


def section_text(doc: Doc, key) -> str:
    return str(doc.get(section_name(key), type=Text))


def section_texts(doc: Doc, keys) -> dict[str, str]:
    return {str(key): section_text(doc, key) for key in keys}


def writers(doc: Doc) -> dict[str, dict]:
    return dict(doc.get(WRITERS, type=Map))


def set_text(doc: Doc, key, new: str) -> None:
    """Make a section's text `new`, deleting and inserting only the part that differs."""
    text = doc.get(section_name(key), type=Text)
    old = str(text)
    start = 0
    while start < min(len(old), len(new)) and old[start] == new[start]:
        start += 1
    end = 0
    while end < min(len(old), len(new)) - start and old[-1 - end] == new[-1 - end]:
        end += 1
    # pycrdt counts positions in UTF-8 bytes, not in characters.
    byte_start = len(old[:start].encode())
    byte_end = len(old[:len(old) - end].encode())
    if byte_end > byte_start:
        del text[byte_start:byte_end]
    if len(new) - end > start:
        text.insert(byte_start, new[start:len(new) - end])


class Anchors:
    """Sticky positions in one section's text (Yjs relative positions, base64): they follow that
    text through everyone's later edits. Made from the characters' own ids (`_ids`), so browsers'
    Yjs finds the same characters; one object reads the section's ids once for many anchors."""

    def __init__(self, doc: Doc, key):
        self.ids = _ids(doc, section_name(key))
        # every UTF-16 unit's id names its character (an emoji is two units, two clocks)
        self.index = {(client, clock + unit): position for position, (client, clock, units) in enumerate(self.ids)
                      for unit in range(units)}

    def make(self, start: int, end: int) -> dict[str, str]:
        """Around characters [start, end): the start sticks to the first character's first unit,
        the end to the last character's last unit (after an emoji, not between its two halves),
        so text typed just outside is not taken in. Empty for an empty span."""
        if not 0 <= start < end <= len(self.ids):
            return {}
        client, clock, units = self.ids[end - 1]
        return {"start": _encoded(self.ids[start][:2], Assoc.AFTER), "end": _encoded((client, clock + units - 1),
                                                                                     Assoc.BEFORE)}

    def find(self, where: dict) -> tuple[int, int] | None:
        """Where an anchor is now, in characters; None if either end's character is gone
        (deleted, or never in this section's text)."""
        ends = []
        for end in ("start", "end"):
            try:
                found = StickyIndex.decode(base64.b64decode(where[end])).to_json()
                item, assoc = found["item"], found["assoc"]
                position = self.index[(item["client"], item["clock"])]
            except (KeyError, TypeError, ValueError, RuntimeError):
                return None
            ends.append(position + (1 if assoc < 0 else 0))
        return (ends[0], ends[1]) if ends[0] <= ends[1] else None


def resolve(doc: Doc, key, where: dict) -> tuple[int, int] | None:
    return Anchors(doc, key).find(where)


def _encoded(item: tuple[int, int], assoc: Assoc) -> str:
    client, clock = item
    return base64.b64encode(StickyIndex.from_json({"item": {"client": client, "clock": clock},
                                                   "assoc": -1 if assoc == Assoc.BEFORE else 0}).encode()).decode()


def _ids(doc: Doc, name: str) -> list[tuple[int, int, int]]:
    """Each character's Yjs id (client, clock) and its UTF-16 units: what a relative position
    names (a character of two units has two clocks, the second clock + 1). A clock counts
    UTF-16 code units, as Yjs does; pycrdt 0.14's own sticky index counts UTF-8 bytes inside a
    block (y-crdt/pycrdt#382), so its positions after an "é" or a "—" pointed browsers at other
    characters. It does name a block's first character right (offset 0), and a block can be
    told from the next only by guessing (a clock that follows by bytes can be a new block's
    after a deletion). So the ids are read from a copy in which a mark is typed between every two
    characters: each character is then the first of its own block, and splitting a block keeps
    its characters' ids (0.24 s for a 4,000-character section, 1 s for 8,000: once per review)."""
    original = str(doc.get(name, type=Text))
    if not original:
        return []
    copy = Doc()
    copy.apply_update(doc.get_update())
    split = copy.get(name, type=Text)
    offsets, offset = [], 0
    for character in original:
        offsets.append(offset)
        offset += len(character.encode())
    with copy.transaction():
        for at in reversed(offsets[1:]):  # from the end: earlier byte offsets stay where they were
            split.insert(at, "|")
    ids = []
    for position, (character, at) in enumerate(zip(original, offsets, strict=True)):
        found = split.sticky_index(at + position, Assoc.AFTER).to_json()["item"]  # `position` marks before it
        ids.append((found["client"], found["clock"], len(character.encode("utf-16-le")) // 2))
    return ids


def section_keys(doc: Doc) -> list[str]:
    return [name.removeprefix("section:") for name in doc if name.startswith("section:")]


def only_sections(document_id: int, names: set[str]) -> bool:
    """Whether every root name in `names` is one of the document's sections (or the locks)."""
    keys = {name.removeprefix("section:") for name in names - {WRITERS} if name.startswith("section:")}
    if any(not name.startswith("section:") for name in names - {WRITERS}):
        return False
    try:
        known = {str(key) for key in Section.objects.filter(document_id=document_id, key__in=keys)
                 .values_list("key", flat=True)}
    except ValidationError:  # not a section key at all
        return False
    return known == keys


def all_section_texts(doc: Doc) -> dict[str, str]:
    return section_texts(doc, section_keys(doc))


def limit_lengths(doc: Doc, limit: int, before: dict[str, str] | None = None) -> tuple[bytes | None, list[str]]:
    """Sections whose text is now longer than `limit` characters go back to their text in `before`
    (a paste is refused whole) or, without it, are cut at the limit. Returns the correcting
    update (None if every section fits) and the keys of the sections corrected."""
    long = [key for key in section_keys(doc) if len(section_text(doc, key)) > limit]
    if not long:
        return None, []
    state = doc.get_state()
    with doc.transaction(origin="limits"):
        for key in long:
            previous = (before or {}).get(key)
            set_text(doc, key, previous if previous is not None and len(previous) <= limit
                     else section_text(doc, key)[:limit])
    return doc.get_update(state), long


def locked(doc: Doc) -> tuple[dict[str, dict], dict[str, str]]:
    """What a client may not change: the writers map, and the text of every section an agent is
    writing (its lock), as they are now."""
    held = writers(doc)
    return held, section_texts(doc, held)


def undo_locked_changes(doc: Doc, held: dict[str, dict], texts: dict[str, str]) -> tuple[bytes | None, list[str]]:
    """After a client's update: put back what `locked()` said it may not change. Returns the
    correcting update (None when the client kept to its own sections) and the keys of the held
    sections whose text it had changed."""
    current = doc.get(WRITERS, type=Map)
    wrong_writers = dict(current) != held
    wrong_texts = [key for key, text in texts.items() if section_text(doc, key) != text]
    if not wrong_writers and not wrong_texts:
        return None, []
    before = doc.get_state()
    with doc.transaction(origin="locks"):
        if wrong_writers:
            for key in [key for key in dict(current) if key not in held]:
                del current[key]
            for key, writer in held.items():
                if current.get(key) != writer:
                    current[key] = writer
        for key in wrong_texts:
            set_text(doc, key, texts[key])
    return doc.get_update(before), wrong_texts


class Peer:
    """A server-side writer of the shared document (an agent, a form): loads the document once,
    and stores and broadcasts each change it makes."""

    def __init__(self, document_id: int, origin: str):
        self.document_id, self.origin = document_id, origin
        self.doc = load(document_id)

    def _text(self, key) -> Text:
        return self.doc.get(section_name(key), type=Text)

    def _commit(self, before: bytes) -> None:
        update = self.doc.get_update(before)
        if update != EMPTY_UPDATE:
            store(self.document_id, update, self.origin)
            transaction.on_commit(lambda: broadcast(self.document_id, update))

    def text(self, key) -> str:
        return str(self._text(key))

    def append(self, key, piece: str) -> None:
        self.append_many({key: piece})

    def append_many(self, pieces: dict) -> None:
        """Append to several sections as one update: one stored row and one broadcast, however
        many sections a writer batch streams into."""
        before = self.doc.get_state()
        with self.doc.transaction(origin=self.origin):
            for key, piece in pieces.items():
                text = self._text(key)
                text.insert(len(text), piece)
        self._commit(before)

    def replace(self, key, new: str) -> None:
        """Make the section's text `new`, changing only the part that differs (so a cursor or
        an edit elsewhere in the text is not disturbed)."""
        if self.text(key) == new:
            return
        before = self.doc.get_state()
        with self.doc.transaction(origin=self.origin):
            set_text(self.doc, key, new)
        self._commit(before)

    def set_writer(self, key, writer: dict | None) -> None:
        """Mark a section as being written by an agent (people's editors lock it), or free it."""
        before = self.doc.get_state()
        writers_map = self.doc.get(WRITERS, type=Map)
        if writer is None:
            if str(key) not in writers_map:
                return
            del writers_map[str(key)]
        else:
            writers_map[str(key)] = writer
        self._commit(before)
