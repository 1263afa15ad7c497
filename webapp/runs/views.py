"""The document's page (its text, outline, run panel and suggestions, live) and its state for
clients that resync; starting, approving and cancelling writing runs, regenerating a section,
taking one over or giving it to a fresh writer, deciding on suggestions, and threads of comments
on a passage. Each view authorises through the document's
project (documents.services.document_for_user), then calls one service."""

from __future__ import annotations

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import HttpResponse, JsonResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.template.loader import render_to_string
from django.urls import reverse
from django.views.decorators.http import require_POST

from webapp import events
from webapp.documents import export, presence
from webapp.documents import services as documents
from webapp.documents.models import Document, Section
from webapp.projects.models import Membership, Role
from webapp.runs import asking, discussing, services, suggestions
from webapp.runs.models import ACTIVE, ASKED, PERSON, Comment, Suggestion, WritingRun


def _document(request, document_id: int, role: str = Role.VIEWER) -> tuple[Document, Membership]:
    return documents.document_for_user(user=request.user, document_id=document_id, role=role)


def _back(document_id: int, anchor: str = "runs"):
    return redirect(reverse("document_detail", args=[document_id]) + f"#{anchor}")


@login_required
def document_detail(request, document_id: int):
    document, membership = _document(request, document_id)
    return render(request, "documents/document_detail.html", _page(request, document, membership) | {
        "live_user": presence.person(request.user.username)})


LIVE_PARTS = {"head": "documents/_live_head.html", "runs": "runs/_run_panel.html", "body": "documents/_live_body.html"}


@login_required
def document_live(request, document_id: int):
    """The page's live regions (`?part=runs` for the Agents panel alone), rendered by the page's
    own templates: the page swaps them in when an event says they changed."""
    document, membership = _document(request, document_id)
    # Each region at most once, whatever the query string repeats: the work a request makes is bounded.
    parts = [part for part in LIVE_PARTS if part in request.GET.getlist("part")] or list(LIVE_PARTS)
    context = _page(request, document, membership, sections="head" in parts or "body" in parts)
    return HttpResponse("".join(render_to_string(LIVE_PARTS[part], context, request) for part in parts))


def _page(request, document: Document, membership: Membership, sections: bool = True) -> dict:
    """What the page shows, read after the event sequence number it is current to (an event
    after that number may already be included: the page's handling of events is idempotent)."""
    seq = events.current_seq(events.document_group(document.pk))
    document.refresh_from_db()
    rows: list[dict] = []
    references = None
    suggestions: dict[int | None, list] = {}
    for suggestion in document.suggestions.filter(status="open").select_related("section"):
        suggestions.setdefault(suggestion.section_id, []).append(suggestion)  # None: the title
    if sections:
        tree = list(document.section_tree())
        references = export.References([section for section, _, _ in tree])
        rows = [{"section": section, "depth": depth, "number": number, "level": min(depth + 2, 6),
                 "html": export.render_markdown_safe(references.linked(section)) if section.text else ""}
                for section, depth, number in tree]
        parents = {row["section"].parent_id for row in rows}
        threads: dict[int, list[Comment]] = {}
        for thread in document.comments.filter(thread=None, resolved_at=None).select_related("author") \
                .prefetch_related("replies__author"):
            threads.setdefault(thread.section_id, []).append(thread)
        for row in rows:
            row["suggestions"] = suggestions.get(row["section"].id, [])
            row["threads"] = threads.get(row["section"].id, [])
            row["leaf"] = row["section"].id not in parents
    else:
        rows = [{}] if document.sections.exists() else []  # the panel only asks whether there are any
    run = document.runs.prefetch_related("tasks__section").first()
    if run is not None:
        waiting = run.waiting_ahead()
        for task in run.tasks.all():  # the prefetched objects the panel shows
            task.ahead = waiting.get(task.pk)
    lead_words = len(document.lead.split())  # with the words of sections that are not leaves: no editor counts them
    fixed_words = lead_words + sum(row["section"].word_count() for row in rows if row and not row["leaf"])
    return {
        "document": document, "project": document.project, "membership": membership, "rows": rows, "seq": seq,
        "can_edit": membership.allows(Role.EDITOR),
        "planned_words": sum(row["section"].word_budget for row in rows if row.get("depth") == 0),
        "fixed_words": fixed_words, "words": lead_words + sum(row["section"].word_count() for row in rows if row),
        "run": run, "run_active": run is not None and run.status in ACTIVE,
        "title_suggestions": suggestions.get(None, []),
        "claims_to_check": [s for found in suggestions.values() for s in found if s.kind == "claim"],
        "references": references.listing() if references else [],
    }


@login_required
def document_review_copy(request, document_id: int, fmt: str):
    """The article for people checking it: each sentence the reviewer asks them to check (a date,
    number or name no source supports, still open), and each change people (or an agent they
    asked) suggest and nobody decided yet, is marked where it stands and listed at the end."""
    document, _ = _document(request, document_id)
    checks: export.Checks = {}
    for suggestion in document.suggestions.filter(status="open").exclude(section=None).select_related("author"):
        if suggestion.kind == "claim":
            checks.setdefault(suggestion.section_id, []).append((suggestion.original, suggestion.reason))
        elif suggestion.role in (PERSON, asking.ROLE) and suggestion.kind != ASKED:  # people's, and answers
            change = f"“{suggestion.replacement}”" if suggestion.replacement else "removing it"
            checks.setdefault(suggestion.section_id, []).append(
                (suggestion.original, f"{suggestion.by} suggests {change}."))
    return export.download(document, fmt, checks)


@login_required
def document_state(request, document_id: int):
    """Everything a page shows about a document, from the database, with the event sequence
    number it is current to: a client that missed events (a gap in `seq`, a dropped socket)
    loads this and applies only the events after `seq`."""
    document, membership = _document(request, document_id)
    return JsonResponse(_state(document) | {"role": membership.role})


def _state(document: Document) -> dict:
    """The document as the database has it now, and the last event number sent before it was
    read (read first: an event after it may already be included, so events are idempotent)."""
    seq = events.current_seq(events.document_group(document.pk))
    document.refresh_from_db()
    run = WritingRun.objects.filter(document=document).prefetch_related("tasks").first()
    return {
        "document_id": document.pk, "seq": seq, "title": document.title, "lead": document.lead,
        "words": document.word_count(), "target_words": document.target_words,
        # `key` names the section's text in the shared (CRDT) document: "section:<key>".
        "sections": [{"id": s.pk, "key": str(s.key), "parent_id": s.parent_id, "number": number, "depth": depth,
                      "heading": s.heading, "text": s.text, "status": s.status, "version": s.version,
                      "word_budget": s.word_budget, "pinned": s.pinned}
                     for s, depth, number in document.section_tree()],
        "run": None if run is None else {
            "id": run.pk, "status": run.status, "error": run.error,
            "tasks": [{"id": t.pk, "role": t.role, "section_id": t.section_id, "status": t.status, "words": t.words,
                       "tokens": t.tokens, "attempts": t.attempts, "waiting_ahead": t.waiting_ahead}
                      for t in run.tasks.all()]},
        "open_suggestions": document.suggestions.filter(status="open").count(),
        # `anchor`: where each one sits in the shared text (Yjs relative positions, base64).
        "suggestions": [{"id": s.pk, "section_id": s.section_id, "role": s.role, "kind": s.kind, "original": s.original,
                         "replacement": s.replacement, "reason": s.reason, "anchor": s.anchor}
                        for s in document.suggestions.filter(status="open")],
        # Open threads of comments on passages, each with its replies in order.
        "threads": [{"id": t.pk, "section_id": t.section_id, "quote": t.quote, "anchor": t.anchor,
                     "comments": [{"id": c.pk, "by": c.by, "role": c.role, "body": c.body, "answering": c.answering}
                                  for c in [t, *t.replies.all()]]}
                    for t in document.comments.filter(thread=None, resolved_at=None).select_related("author")
                    .prefetch_related("replies__author")],
    }


@login_required
def run_list(request, document_id: int):
    document, membership = _document(request, document_id)
    runs = document.runs.prefetch_related("tasks__section")[:20]
    return render(request, "runs/run_list.html", {"document": document, "project": document.project,
                                                  "membership": membership, "runs": runs,
                                                  "can_edit": membership.allows(Role.EDITOR)})


@login_required
@require_POST
def run_start(request, document_id: int):
    document, _ = _document(request, document_id, Role.EDITOR)
    try:
        services.run_start(document=document, user=request.user)
    except services.RunRefused as error:
        messages.error(request, str(error))
        return _back(document.id)
    messages.success(request, "The agents are on it." + (" The outline needs your approval first."
                                                           if not document.auto_approve_outline else ""))
    return _back(document.id)


def _run(request, document_id: int, run_id: int) -> WritingRun:
    document, _ = _document(request, document_id, Role.EDITOR)
    return get_object_or_404(WritingRun, pk=run_id, document=document)


@login_required
@require_POST
def run_approve(request, document_id: int, run_id: int):
    services.run_approve(run=_run(request, document_id, run_id))
    messages.success(request, "Outline approved; the writers have started.")
    return _back(document_id)


@login_required
@require_POST
def run_cancel(request, document_id: int, run_id: int):
    services.run_cancel(run=_run(request, document_id, run_id))
    messages.success(request, "Cancelled. What was written so far is kept.")
    return _back(document_id)


@login_required
@require_POST
def section_regenerate(request, document_id: int, section_id: int):
    document, _ = _document(request, document_id, Role.EDITOR)
    section = get_object_or_404(Section, pk=section_id, document=document)
    try:
        services.section_regenerate(section=section, user=request.user,
                                    instruction=request.POST.get("instruction", "").strip())
    except services.RegenerateRefused as error:
        messages.error(request, str(error))
    else:
        messages.success(request, f"Rewriting “{section.heading}”. The current text stays in the history.")
    return _back(document.id, f"section-{section.id}")


@login_required
@require_POST
def section_take_over(request, document_id: int, section_id: int):
    document, _ = _document(request, document_id, Role.EDITOR)
    section = get_object_or_404(Section, pk=section_id, document=document)
    try:
        services.section_take_over(section=section, user=request.user)
    except services.TakeOverRefused as error:
        messages.error(request, str(error))
    else:
        messages.success(request, f"“{section.heading}” is yours: the writer stopped and its text so far is kept.")
    return _back(document.id, f"section-{section.id}")


@login_required
@require_POST
def section_rewrite(request, document_id: int, section_id: int):
    document, _ = _document(request, document_id, Role.EDITOR)
    section = get_object_or_404(Section, pk=section_id, document=document)
    try:
        services.section_rewrite(section=section, user=request.user)
    except (services.TakeOverRefused, services.RegenerateRefused) as error:
        messages.error(request, str(error))
    else:
        messages.success(request, f"A new writer is rewriting “{section.heading}”; the stalled writer's text is in "
                                  "the history.")
    return _back(document.id, f"section-{section.id}")


def _selection(request, document_id: int, section_id: int) -> tuple[Section, int]:
    """The section an editor selected words in, and where (the editor's UTF-16 offset)."""
    document, _ = _document(request, document_id, Role.EDITOR)
    section = get_object_or_404(Section, pk=section_id, document=document)
    try:
        return section, max(0, int(request.POST.get("at") or 0))
    except ValueError:
        return section, 0


@login_required
@require_POST
def suggestion_propose(request, document_id: int, section_id: int):
    """A person's own change to the words they selected, for others to accept or reject."""
    section, at = _selection(request, document_id, section_id)  # editors only: viewers cannot suggest
    try:
        made = suggestions.suggestion_propose(section=section, user=request.user, at=at,
                                              original=request.POST.get("original", ""),
                                              replacement=request.POST.get("replacement", ""),
                                              reason=request.POST.get("reason", ""))
    except (suggestions.SuggestionRefused, documents.SectionHeld) as error:
        messages.error(request, str(error))
        return _back(document_id, f"section-{section.id}")
    messages.success(request, "Suggested: the others see it marked in the text, to accept or reject.")
    return _back(document_id, f"suggestion-{made.id}")


@login_required
@require_POST
def section_ask(request, document_id: int, section_id: int):
    """Ask an agent to change the words a person selected; its answer streams in as a suggestion."""
    section, at = _selection(request, document_id, section_id)
    try:
        asked = asking.ask(section=section, user=request.user, original=request.POST.get("original", ""), at=at,
                           instruction=request.POST.get("instruction", ""),
                           own_words=request.POST.get("own_words", ""))
    except (asking.AskRefused, suggestions.SuggestionRefused, documents.SectionHeld) as error:
        messages.error(request, str(error))
        return _back(document_id, f"section-{section.id}")
    messages.success(request, "Asked: the agent's answer appears on the words you selected, as a suggestion.")
    return _back(document_id, f"suggestion-{asked.id}")


@login_required
@require_POST
def comment_start(request, document_id: int, section_id: int):
    """A thread on the words a person selected; any member may comment, editors may ask the agent."""
    document, membership = _document(request, document_id)
    section = get_object_or_404(Section, pk=section_id, document=document)
    try:
        at = max(0, int(request.POST.get("at") or 0))
    except ValueError:
        at = 0
    try:
        thread = discussing.comment_start(section=section, user=request.user, at=at,
                                          original=request.POST.get("original", ""),
                                          body=request.POST.get("body", ""), ask_agent=_asks_agent(request, membership))
    except (discussing.CommentRefused, suggestions.SuggestionRefused) as error:
        messages.error(request, str(error))
        return _back(document_id, f"section-{section.id}")
    return _back(document_id, f"comment-{thread.id}")


def _thread(request, document_id: int, comment_id: int) -> tuple[Comment, Membership]:
    document, membership = _document(request, document_id)
    return get_object_or_404(Comment.objects.select_related("thread"), pk=comment_id, document=document), membership


def _asks_agent(request, membership: Membership) -> bool:
    return bool(request.POST.get("ask_agent")) and membership.allows(Role.EDITOR)


@login_required
@require_POST
def comment_reply(request, document_id: int, comment_id: int):
    thread, membership = _thread(request, document_id, comment_id)
    try:
        discussing.comment_reply(thread=thread, user=request.user, body=request.POST.get("body", ""),
                                 ask_agent=_asks_agent(request, membership))
    except discussing.CommentRefused as error:
        messages.error(request, str(error))
    return _back(document_id, f"comment-{thread.thread_id or thread.id}")


@login_required
@require_POST
def comment_resolve(request, document_id: int, comment_id: int):
    thread, membership = _thread(request, document_id, comment_id)
    try:
        discussing.comment_resolve(thread=thread.thread or thread, user=request.user,
                                   may_edit=membership.allows(Role.EDITOR))
    except discussing.CommentRefused as error:
        messages.error(request, str(error))
    return _back(document_id, f"section-{thread.section_id}")


def _suggestion(request, document_id: int, suggestion_id: int) -> Suggestion:
    document, _ = _document(request, document_id, Role.EDITOR)
    return get_object_or_404(Suggestion.objects.select_related("section"), pk=suggestion_id, document=document)


@login_required
@require_POST
def suggestion_accept(request, document_id: int, suggestion_id: int):
    suggestion = _suggestion(request, document_id, suggestion_id)
    try:
        suggestions.suggestion_accept(suggestion=suggestion, user=request.user)
    except (suggestions.SuggestionOutdated, suggestions.SuggestionRefused) as error:
        messages.error(request, str(error))
    except (documents.SectionConflict, documents.TextTooLong, documents.SectionHeld) as error:
        messages.error(request, str(error))
    else:
        messages.success(request, "Accepted: the change is in the text and in its history.")
    return _back(document_id, f"section-{suggestion.section_id}")


@login_required
@require_POST
def suggestion_reject(request, document_id: int, suggestion_id: int):
    suggestion = _suggestion(request, document_id, suggestion_id)
    suggestions.suggestion_reject(suggestion=suggestion, user=request.user)
    messages.success(request, "Rejected: the text stays as it was.")
    return _back(document_id, f"section-{suggestion.section_id}")
