"""Asking an agent about one passage: a person selects words, picks what should change
("shorter", "more concrete", "fix the facts", or their own words), and the answer streams back
as a tracked change on exactly those words, anchored like any suggestion, for people to accept
or reject. The request goes to the serving core at interactive priority, before bulk writing,
so it answers while a run writes and everyone keeps editing elsewhere."""

from __future__ import annotations

import logging
import re
import time
import uuid
from collections.abc import Callable

from django.db import transaction

from agents.llm.types import INTERACTIVE, GenerationRequest
from agents.roles import section_text
from webapp import events, llm
from webapp.celery import enqueue
from webapp.runs import lifecycle, suggestions
from webapp.runs.models import ANSWERED, ASKED, Suggestion, SuggestionStatus

log = logging.getLogger(__name__)

ROLE = "editor_agent"  # Suggestion.role of an agent's answer to a person's question
INSTRUCTIONS = {
    "shorter": "Make it shorter. Keep its meaning and its facts.",
    "concrete": "Make it more concrete: a specific example, number or name instead of a general phrase.",
    "facts": "Correct any statement that is wrong. Change nothing that is right.",
}
INSTRUCTION_MAX_CHARS = 500
STREAM_EVERY_S = 0.2  # the card's text is saved and pages told at most this often
SYSTEM = ("You edit one passage of an article. Rewrite the passage as the instruction asks. Answer with the "
          "rewritten passage only: no quotation marks, no heading, no note about what you changed.")


class AskRefused(ValueError):
    pass


def ask(*, section, user, original: str, at: int, instruction: str, own_words: str = "") -> Suggestion:
    """Anchor the selected words and queue the agent; the suggestion streams its answer in."""
    wanted = own_words.strip() or INSTRUCTIONS.get(instruction, "")
    if not wanted:
        raise AskRefused("Say what should change: pick shorter, more concrete or fix the facts, or type it.")
    if len(wanted) > INSTRUCTION_MAX_CHARS:
        raise AskRefused(f"An instruction is at most {INSTRUCTION_MAX_CHARS} characters.")
    anchor = suggestions.selection_anchor(section, original, at)
    suggestion = suggestions.saved(Suggestion(document_id=section.document_id, section=section, role=ROLE,
                                              author=user, kind=ASKED, original=original, reason=wanted,
                                              anchor=anchor))
    transaction.on_commit(lambda: enqueue(lifecycle.ASK_TASK, suggestion.pk))
    return suggestion


def answer(*, suggestion_id: int) -> None:
    """The agent's answer, streamed into the suggestion's replacement (run by a worker)."""
    suggestion = Suggestion.objects.select_related("section").filter(pk=suggestion_id,
                                                                     status=SuggestionStatus.OPEN).first()
    if suggestion is None or suggestion.section is None:
        return
    request = GenerationRequest(
        id=f"ask-{suggestion.pk}-{uuid.uuid4().hex[:6]}",
        max_new_tokens=min(400, 24 + 3 * len(suggestion.original.split())),
        messages=[{"role": "system", "content": SYSTEM},
                  {"role": "user", "content": f"Section: {suggestion.section.heading}\n\nPassage:\n"
                                              f"{suggestion.original}\n\nInstruction: {suggestion.reason}"}])
    try:
        text = stream(request, f"ask-{suggestion.pk}", clean, lambda shown: _show(suggestion, shown))
    except Exception as error:  # noqa: BLE001  (said on the card: the person asks again or edits)
        log.exception("asking an agent about suggestion %s failed", suggestion.pk)
        _give_up(suggestion, f"The agent could not answer ({error}). Ask again, or edit the text yourself.")
        return
    final = clean(text)
    if not final or final == suggestion.original:
        _give_up(suggestion, "The agent had no change to offer. Ask again in other words, or edit the text yourself.")
    else:
        _show(suggestion, final, kind=ANSWERED)


def stream(request: GenerationRequest, group: str, shape: Callable[[str], str], show: Callable[[str], None]) -> str:
    """One interactive request to the writers' model (before bulk writing): `show(shape(text so
    far))` whenever that changed, at most every STREAM_EVERY_S; returns the whole text. Raises
    RuntimeError when the model fails the request."""
    engine = llm.Scheduled(llm.get_engine(section_text.ROLE), group, INTERACTIVE)
    text, shown, last = "", "", 0.0
    for delta in engine.stream(llm.with_role_adapters([(section_text.ROLE, request)])):
        if delta.finished and delta.finish_reason == "error":
            raise RuntimeError(delta.error or "the model failed")
        text += delta.text
        if time.monotonic() - last >= STREAM_EVERY_S and shape(text) and shape(text) != shown:
            shown, last = shape(text), time.monotonic()
            show(shown)
    return text


def clean(text: str) -> str:
    """The answer as a replacement: its first paragraph, without quotes or a preamble."""
    text = text.strip()
    text = re.sub(r"^(here is|here's|sure|rewritten|revised)[^:\n]*:\s*", "", text, flags=re.IGNORECASE)
    text = text.split("\n\n", 1)[0].strip()
    return text.strip("\"“”'").strip()


def _show(suggestion: Suggestion, replacement: str, kind: str = ASKED) -> None:
    Suggestion.objects.filter(pk=suggestion.pk, status=SuggestionStatus.OPEN).update(replacement=replacement,
                                                                                     kind=kind)
    suggestions.changed(suggestion.document_id, now=True)


def _give_up(suggestion: Suggestion, why: str) -> None:
    """No usable answer: the card goes (an empty replacement would read as "delete these words"),
    and the person who asked is told why on their page."""
    if not Suggestion.objects.filter(pk=suggestion.pk, status=SuggestionStatus.OPEN).update(
            status=SuggestionStatus.REJECTED, reason=why[:1000]):
        return  # they said "Never mind" meanwhile
    events.send(events.SuggestionDecided(document_id=suggestion.document_id, suggestion_id=suggestion.pk,
                                         status=SuggestionStatus.REJECTED), now=True)
    if suggestion.author_id:
        events.notify(suggestion.author_id, suggestion.document_id, why, level="error")
