"""Threads of comments on a passage: a person selects words and comments on them; others reply;
a reply can ask the editor agent, which answers in the thread (streamed, at interactive priority,
so it answers while a run writes); an editor, or whoever started the thread, resolves it.
Comments change no text, so they may be made on a section an agent is writing; any member may
comment, only editors may ask the agent (it spends the model's time)."""

from __future__ import annotations

import logging
import uuid

from django.db import transaction
from django.utils import timezone

from agents.llm.types import GenerationRequest
from webapp import events
from webapp.celery import enqueue
from webapp.runs import asking, lifecycle, suggestions
from webapp.runs.models import Comment

log = logging.getLogger(__name__)

BODY_MAX_CHARS = 5_000
THREAD_MAX_COMMENTS = 200
REPLY_TOKENS = 200
REPLY_SENTENCES = 3
SYSTEM = ("You are the editor of an article. Answer people's comments on a passage of it: two or three sentences, "
          "about the passage's subject and facts, concrete, no greeting.")


class CommentRefused(ValueError):
    pass


def comment_start(*, section, user, original: str, at: int, body: str, ask_agent: bool = False) -> Comment:
    """A new thread on the words `original` near UTF-16 offset `at` of the section's shared text."""
    body = _body(body, ask_agent)
    anchor = suggestions.selection_anchor(section, original.replace("\r\n", "\n"), at, while_written=True)
    with transaction.atomic():
        thread = Comment.objects.create(document_id=section.document_id, section=section, author=user, body=body,
                                        quote=original.replace("\r\n", "\n"), anchor=anchor)
        if ask_agent:
            _ask_agent(thread, user)
    changed(section.document_id)
    return thread


def comment_reply(*, thread: Comment, user, body: str, ask_agent: bool = False) -> Comment:
    if thread.thread_id is not None:
        thread = thread.thread  # a reply to a reply goes to its thread
    if thread.resolved_at is not None:
        raise CommentRefused("This thread is resolved; start a new one on the passage.")
    if thread.replies.count() >= THREAD_MAX_COMMENTS:
        raise CommentRefused(f"A thread holds at most {THREAD_MAX_COMMENTS} comments; start a new one.")
    body = _body(body, ask_agent)
    with transaction.atomic():
        reply = thread
        if body:
            reply = Comment.objects.create(document_id=thread.document_id, section_id=thread.section_id,
                                           thread=thread, author=user, body=body)
        if ask_agent:
            _ask_agent(thread, user)
    changed(thread.document_id)
    return reply


def comment_resolve(*, thread: Comment, user, may_edit: bool) -> None:
    if not may_edit and thread.author_id != user.pk:
        raise CommentRefused("Only editors, and whoever started the thread, can resolve it.")
    Comment.objects.filter(pk=thread.pk, resolved_at=None).update(resolved_by=user, resolved_at=timezone.now())
    changed(thread.document_id)


def changed(document_id: int, *, now: bool = False) -> None:
    """A thread grew or was resolved: pages re-read the section's threads."""
    count = Comment.objects.filter(document_id=document_id, thread=None, resolved_at=None).count()
    events.send(events.CommentsChanged(document_id=document_id, open=count), now=now)


def _body(body: str, ask_agent: bool) -> str:
    body = body.replace("\r\n", "\n").strip()
    if not body and not ask_agent:
        raise CommentRefused("Write a comment first.")
    if len(body) > BODY_MAX_CHARS:
        raise CommentRefused(f"A comment says at most {BODY_MAX_CHARS:,} characters.")
    return body


def _ask_agent(thread: Comment, user) -> None:
    if thread.replies.filter(answering=True).exists():
        raise CommentRefused("The editor agent is answering in this thread already.")
    answer = Comment.objects.create(document_id=thread.document_id, section_id=thread.section_id, thread=thread,
                                    role=asking.ROLE, author=user, answering=True)
    transaction.on_commit(lambda: enqueue(lifecycle.REPLY_TASK, answer.pk))


def reply(*, comment_id: int) -> None:
    """The editor agent's reply, streamed into its comment (run by a worker)."""
    answer = Comment.objects.select_related("thread__section").filter(pk=comment_id, answering=True).first()
    if answer is None or answer.thread is None:
        return
    thread = answer.thread
    said = [f"{comment.by}: {comment.body}" for comment in [thread, *thread.replies.filter(pk__lt=answer.pk)]
            if comment.body]
    request = GenerationRequest(
        id=f"reply-{answer.pk}-{uuid.uuid4().hex[:6]}", max_new_tokens=REPLY_TOKENS, sentences=REPLY_SENTENCES,
        repetition_penalty=1.1, no_repeat_ngrams=4,
        messages=[{"role": "system", "content": SYSTEM},
                  {"role": "user", "content": f"Section: {thread.section.heading}\n\nPassage: {thread.quote}\n\n"
                                              "Comments:\n" + "\n".join(said[-12:])
                                              + "\n\nYour reply to the comments:"}])
    def show(body: str) -> None:
        Comment.objects.filter(pk=answer.pk).update(body=body)
        changed(answer.document_id, now=True)

    try:
        text = asking.stream(request, f"reply-{answer.pk}", _said, show)
    except Exception as error:  # noqa: BLE001  (said in the thread: the person asks again)
        log.exception("the editor agent's reply %s failed", answer.pk)
        text = f"(The editor agent could not answer: {error}. Ask again.)"
    Comment.objects.filter(pk=answer.pk).update(
        body=_said(text) or "(The editor agent had nothing to say. Ask in other words.)", answering=False)
    changed(answer.document_id, now=True)


def _said(text: str) -> str:
    """The reply: its first paragraph (a small model goes on to repeat the prompt's layout)."""
    return text.strip().split("\n\n", 1)[0].strip()
