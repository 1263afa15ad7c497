"""Issue 25: people propose their own changes, anchored like the reviewer's, for others to accept
or reject; viewers cannot; a section an agent is writing refuses them in the lock's words."""

from __future__ import annotations

import pytest

from tests.support.factories import PASSWORD
from webapp.documents import crdt
from webapp.documents import services as documents
from webapp.runs import suggestions
from webapp.runs.models import PERSON, Suggestion

TEXT = "🐦 Gulls are loud. Terns are quick. Gulls are loud at dawn."


@pytest.fixture
def gulls(document, owner):
    section = document.sections.get(heading="Gulls")
    documents.section_save_text(section_id=section.id, user=owner, text=TEXT, expected_version=section.version)
    section.refresh_from_db()
    return section


def _post(client, person, gulls, **fields):
    client.login(username=person.username, password=PASSWORD)
    return client.post(f"/documents/{gulls.document_id}/sections/{gulls.id}/suggest/", fields, follow=True)


def test_a_person_s_suggestion_is_anchored_on_the_words_they_selected_and_another_accepts_it(
        client, document, owner, editor, gulls):
    second = TEXT.rindex("Gulls are loud")
    at = len(TEXT[:second].encode("utf-16-le")) // 2  # the editor counts UTF-16 units: the bird is two
    page = _post(client, editor, gulls, original="Gulls are loud", replacement="Gulls call", at=at,
                 reason="Plainer").content.decode()
    assert "Suggested: the others see it" in page
    made = Suggestion.objects.get(role=PERSON)
    assert made.author == editor and made.by == "edgar" and made.kind == "edit"
    assert crdt.resolve(crdt.load(document.id), gulls.key, made.anchor) == (second, second + len("Gulls are loud"))

    client.logout()
    client.login(username=owner.username, password=PASSWORD)
    page = client.get(f"/documents/{document.id}/").content.decode()
    assert f'id="suggestion-{made.id}"' in page and "edgar suggests" in page
    review = client.get(f"/documents/{document.id}/export/md/review/").content.decode()
    assert "Gulls: “Gulls are loud” edgar suggests “Gulls call”." in review  # in the review copy while open
    client.post(f"/documents/{document.id}/suggestions/{made.id}/accept/")
    gulls.refresh_from_db()
    assert gulls.text == "🐦 Gulls are loud. Terns are quick. Gulls call at dawn."  # the second, not the first
    assert gulls.revisions.order_by("-id").first().summary == "Accepted suggestion by edgar (person): edit"


def test_a_suggestion_that_cannot_be_made_says_why_and_stores_nothing(client, document, editor, viewer, gulls):
    for fields, reason in (({"original": "", "replacement": "x"}, "Select the words first."),
                           ({"original": "Puffins", "replacement": "x"}, "is no longer in"),
                           ({"original": "Terns are quick.", "replacement": "Terns are quick."}, "is the same")):
        assert reason in _post(client, editor, gulls, **fields).content.decode()
    crdt.Peer(document.id, "writer").set_writer(gulls.key, {"name": "Section writer"})
    page = _post(client, editor, gulls, original="Terns are quick.", replacement="Terns dive.").content.decode()
    assert "Section writer is writing “Gulls” now." in page
    client.logout()
    assert _post(client, viewer, gulls, original="Terns are quick.", replacement="Terns dive.").status_code in (403,
                                                                                                               404)
    assert not Suggestion.objects.exists()


def test_an_empty_replacement_suggests_removing_the_words(document, editor, gulls):
    made = suggestions.suggestion_propose(section=gulls, user=editor, original=" Terns are quick.", replacement="",
                                          at=TEXT.index(" Terns"))
    suggestions.suggestion_accept(suggestion=made, user=editor)
    gulls.refresh_from_db()
    assert gulls.text == "🐦 Gulls are loud. Gulls are loud at dawn."


class _Streaming:
    """An engine whose one answer comes in pieces, recording the card's text after each piece."""

    def __init__(self, pieces: list[str], seen: list[tuple[str, str]], made: list[Suggestion]):
        self.pieces, self.seen, self.made = pieces, seen, made

    def stream(self, requests, cancel=None):
        from agents.llm.types import Delta

        (request,) = requests
        assert request.priority > 0 and "Make it shorter" in request.messages[1]["content"]  # interactive
        for piece in self.pieces:
            yield Delta(request.id, piece)
            card = Suggestion.objects.get(pk=self.made[0].pk)
            self.seen.append((card.kind, card.replacement))
        yield Delta(request.id, "", finished=True, finish_reason="stop")


@pytest.mark.django_db(transaction=True)
def test_an_agent_s_answer_streams_onto_the_selected_words_and_is_acceptable_once_whole(document, owner, editor,
                                                                                        gulls, monkeypatch):
    from webapp import llm
    from webapp.runs import asking

    monkeypatch.setattr(asking, "STREAM_EVERY_S", 0)
    monkeypatch.setattr(asking.transaction, "on_commit", lambda function: None)  # answered below, not queued
    seen: list[tuple[str, str]] = []
    made: list[Suggestion] = []
    monkeypatch.setattr(llm, "get_engine", lambda role="": _Streaming(["Here is the passage: Terns", " are fast."],
                                                                      seen, made))
    original = "Terns are quick."
    made.append(asking.ask(section=gulls, user=editor, original=original, at=TEXT.index(original) + 1,
                           instruction="shorter"))
    with pytest.raises(suggestions.SuggestionRefused, match="still answering"):
        suggestions.suggestion_accept(suggestion=made[0], user=owner)
    asking.answer(suggestion_id=made[0].pk)
    assert seen == [("ask", "Terns"), ("ask", "Terns are fast.")]  # streamed, not yet acceptable
    card = Suggestion.objects.get(pk=made[0].pk)
    assert (card.kind, card.replacement, card.author, card.by) == ("answer", "Terns are fast.", editor, "Editor agent")
    suggestions.suggestion_accept(suggestion=card, user=owner)
    gulls.refresh_from_db()
    assert gulls.text == "🐦 Gulls are loud. Terns are fast. Gulls are loud at dawn."


@pytest.mark.django_db(transaction=True)
def test_an_agent_with_no_answer_takes_its_card_away_saying_why(document, editor, gulls, monkeypatch):
    from webapp import events, llm
    from webapp.runs import asking

    told: list[tuple] = []
    monkeypatch.setattr(events, "notify", lambda *args, **kwargs: told.append((*args, kwargs)))
    monkeypatch.setattr(asking.transaction, "on_commit", lambda function: None)
    monkeypatch.setattr(llm, "get_engine", lambda role="": _Streaming(["\n\n"], [], [made]))
    made = asking.ask(section=gulls, user=editor, original="Terns are quick.", at=0, instruction="",
                      own_words="Make it shorter, please")
    asking.answer(suggestion_id=made.pk)
    made.refresh_from_db()
    assert made.status == "rejected" and "no change to offer" in made.reason
    assert told == [(editor.pk, document.pk, made.reason, {"level": "error"})]  # said on the asker's page
    with pytest.raises(asking.AskRefused, match="Say what should change"):
        asking.ask(section=gulls, user=editor, original="Terns are quick.", at=0, instruction="")


@pytest.mark.django_db(transaction=True)
def test_asking_an_agent_through_a_real_worker_answers_on_exactly_the_selected_words(document, owner, editor, gulls,
                                                                                    celery_worker_process):
    from tests.support.processes import wait_for
    from webapp.runs import asking

    original = "Gulls are loud at dawn."
    asked = asking.ask(section=gulls, user=editor, original=original, at=len(TEXT.encode("utf-16-le")) // 2 - 5,
                       instruction="concrete")
    wait_for(lambda: Suggestion.objects.filter(pk=asked.pk).exclude(kind="ask", status="open").exists(), timeout=90)
    asked.refresh_from_db()
    if asked.status == "rejected":  # the tiny model's noise may clean to nothing: then it says so
        assert "no change to offer" in asked.reason
        return
    assert asked.kind == "answer" and asked.replacement
    where = crdt.resolve(crdt.load(document.id), gulls.key, asked.anchor)
    assert TEXT[where[0]:where[1]] == original
    suggestions.suggestion_accept(suggestion=asked, user=owner)
    gulls.refresh_from_db()
    assert gulls.text.startswith("🐦 Gulls are loud. Terns are quick. ") and original not in gulls.text
