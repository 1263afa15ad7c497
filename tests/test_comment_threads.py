"""Issue 25: a thread of comments on a passage, where people and the editor agent reply. Any
member comments (a comment changes no text, so also while an agent writes the section); only
editors ask the agent; an editor or the thread's author resolves it; non-members get 404."""

from __future__ import annotations

import pytest

from tests.support.factories import PASSWORD
from webapp.documents import crdt
from webapp.documents import services as documents
from webapp.runs import asking, discussing
from webapp.runs.models import Comment

TEXT = "🐦 Gulls are loud. Terns are quick. Gulls are loud at dawn."


@pytest.fixture
def gulls(document, owner):
    section = document.sections.get(heading="Gulls")
    documents.section_save_text(section_id=section.id, user=owner, text=TEXT, expected_version=section.version)
    section.refresh_from_db()
    return section


def _as(client, person):
    client.logout()
    client.login(username=person.username, password=PASSWORD)
    return client


def test_people_discuss_a_passage_in_a_thread_and_an_editor_resolves_it(client, document, owner, editor, viewer,
                                                                         outsider, gulls):
    second = TEXT.rindex("Gulls are loud")
    at = len(TEXT[:second].encode("utf-16-le")) // 2  # the editor counts UTF-16 units: the bird is two
    _as(client, viewer).post(f"/documents/{document.id}/sections/{gulls.id}/comment/",
                             {"original": "Gulls are loud", "at": at, "body": "Loud <b>how</b>? <script>x()</script>",
                              "ask_agent": "1"})
    thread = Comment.objects.get(thread=None)
    assert thread.author == viewer and thread.quote == "Gulls are loud" and thread.body.startswith("Loud")
    assert crdt.resolve(crdt.load(document.id), gulls.key, thread.anchor) == (second, second + len("Gulls are loud"))
    assert not thread.replies.exists()  # a viewer's "ask the agent" is not theirs to spend

    _as(client, editor).post(f"/documents/{document.id}/comments/{thread.id}/reply/", {"body": "At dawn, mostly."})
    page = _as(client, owner).get(f"/documents/{document.id}/").content.decode()
    assert f'id="comment-{thread.id}"' in page and "At dawn, mostly." in page and "edgar" in page
    assert "<script>x()</script>" not in page and "&lt;script&gt;x()&lt;/script&gt;" in page
    state = client.get(f"/documents/{document.id}/state/").json()
    assert [[c["by"] for c in t["comments"]] for t in state["threads"]] == [["vera", "edgar"]]

    # A viewer may not resolve another person's thread; an editor may.
    _as(client, viewer)
    outsider_client = client.__class__()
    outsider_client.login(username=outsider.username, password=PASSWORD)
    for url in (f"/documents/{document.id}/comments/{thread.id}/reply/",
                f"/documents/{document.id}/comments/{thread.id}/resolve/",
                f"/documents/{document.id}/sections/{gulls.id}/comment/"):
        assert outsider_client.post(url, {"body": "hi", "original": "Terns", "at": 0}).status_code == 404
    _as(client, editor).post(f"/documents/{document.id}/comments/{thread.id}/resolve/")
    thread.refresh_from_db()
    assert thread.resolved_by == editor
    assert f'id="comment-{thread.id}"' not in client.get(f"/documents/{document.id}/").content.decode()
    with pytest.raises(discussing.CommentRefused):
        discussing.comment_reply(thread=thread, user=editor, body="Again?")


def test_a_comment_that_cannot_be_made_says_why_and_stores_nothing(client, document, editor, viewer, gulls):
    url = f"/documents/{document.id}/sections/{gulls.id}/comment/"
    for fields, reason in (({"original": "Gulls", "body": ""}, "Write a comment first."),
                           ({"original": "", "body": "hm"}, "Select the words first."),
                           ({"original": "Puffins are", "body": "hm"}, "no longer in"),
                           ({"original": "Gulls", "body": "x" * 5001}, "at most 5,000 characters")):
        page = _as(client, editor).post(url, fields, follow=True).content.decode()
        assert reason in page
    assert not Comment.objects.exists()
    thread = discussing.comment_start(section=gulls, user=viewer, original="Terns", at=0, body="Which terns?")
    with pytest.raises(discussing.CommentRefused, match="Only editors, and whoever started"):
        discussing.comment_resolve(thread=thread, user=editor.__class__.objects.create(username="zed"),
                                   may_edit=False)
    discussing.comment_resolve(thread=thread, user=viewer, may_edit=False)  # their own thread


def test_a_section_an_agent_writes_can_still_be_commented_on(document, editor, gulls):
    crdt.Peer(document.id, "writer").set_writer(gulls.key, {"name": "Section writer", "role": "writer"})
    thread = discussing.comment_start(section=gulls, user=editor, original="Terns are quick", at=0, body="Source?")
    assert thread.pk and thread.anchor


def test_the_editor_agent_replies_in_the_thread_with_the_real_model(document, editor, gulls, monkeypatch,
                                                                    tiny_model_dir, django_capture_on_commit_callbacks):
    from agents.llm.transformers_backend import TransformersEngine
    from webapp import llm

    engine = TransformersEngine(tiny_model_dir, dtype="float32")
    monkeypatch.setattr(llm, "get_engine", lambda role="": engine)
    queued: list[tuple] = []
    monkeypatch.setattr(discussing, "enqueue", lambda name, *args: queued.append((name, *args)))
    with django_capture_on_commit_callbacks(execute=True):
        thread = discussing.comment_start(section=gulls, user=editor, original="Terns are quick", at=0,
                                          body="Is this true?", ask_agent=True)
    answer = thread.replies.get()
    assert answer.role == asking.ROLE and answer.answering and queued == [("agents.reply_in_thread", answer.pk)]
    discussing.reply(comment_id=answer.pk)
    answer.refresh_from_db()
    assert not answer.answering and answer.body and answer.author == editor
    with django_capture_on_commit_callbacks(execute=True):
        discussing.comment_reply(thread=thread, user=editor, body="", ask_agent=True)  # ask again, no words
    assert thread.replies.count() == 2


class _Replying:
    """An engine whose one answer comes in pieces; it keeps the request it was given."""

    def __init__(self, pieces: list[str]):
        self.pieces, self.requests = pieces, []

    def stream(self, requests, cancel=None):
        from agents.llm.types import Delta

        (request,) = requests
        self.requests.append(request)
        for piece in self.pieces:
            yield Delta(request.id, piece)
        yield Delta(request.id, "", finished=True, finish_reason="stop")


def test_the_agent_is_told_the_passage_and_the_thread_and_its_reply_is_one_paragraph(document, editor, viewer, gulls,
                                                                                      monkeypatch):
    from webapp import llm

    engine = _Replying(["Terns also nest on sand.", " Many colonies do.", "\n\nSection: Terns\n\nPassage:"])
    monkeypatch.setattr(llm, "get_engine", lambda role="": engine)
    monkeypatch.setattr(discussing, "enqueue", lambda *args: None)
    thread = discussing.comment_start(section=gulls, user=viewer, original="Terns are quick", at=0,
                                      body="Quick compared with what?")
    discussing.comment_reply(thread=thread, user=editor, body="Good question.", ask_agent=True)
    answer = thread.replies.get(role=asking.ROLE)
    discussing.reply(comment_id=answer.pk)
    answer.refresh_from_db()
    assert answer.body == "Terns also nest on sand. Many colonies do." and not answer.answering
    (request,) = engine.requests
    asked = request.messages[1]["content"]
    assert "Passage: Terns are quick" in asked and "vera: Quick compared with what?" in asked
    assert "edgar: Good question." in asked and request.priority > 0  # interactive: before bulk writing
    assert request.sentences == discussing.REPLY_SENTENCES
