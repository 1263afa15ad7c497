"""Starting, approving and cancelling writing runs, regenerating a section, and deciding on the
reviewer's suggestions. Each view authorises through the document's project, then calls one service."""

from __future__ import annotations

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.views.decorators.http import require_POST

from webapp.documents.models import Section
from webapp.documents.views import _document
from webapp.projects.models import Role
from webapp.runs import services
from webapp.runs.models import ACTIVE, Suggestion, WritingRun


def _back(document_id: int, anchor: str = "runs"):
    return redirect(reverse("document_detail", args=[document_id]) + f"#{anchor}")


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
    if document.runs.filter(status__in=ACTIVE).exists():
        messages.error(request, "A run is already under way for this document; cancel it first.")
        return _back(document.id)
    services.run_start(document=document, user=request.user)
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


def _suggestion(request, document_id: int, suggestion_id: int) -> Suggestion:
    document, _ = _document(request, document_id, Role.EDITOR)
    return get_object_or_404(Suggestion.objects.select_related("section"), pk=suggestion_id, document=document)


@login_required
@require_POST
def suggestion_accept(request, document_id: int, suggestion_id: int):
    suggestion = _suggestion(request, document_id, suggestion_id)
    try:
        services.suggestion_accept(suggestion=suggestion, user=request.user)
    except services.SuggestionOutdated as error:
        messages.error(request, str(error))
    except services.documents.SectionConflict as error:
        messages.error(request, str(error))
    return _back(document_id, f"section-{suggestion.section_id}")


@login_required
@require_POST
def suggestion_reject(request, document_id: int, suggestion_id: int):
    suggestion = _suggestion(request, document_id, suggestion_id)
    services.suggestion_reject(suggestion=suggestion, user=request.user)
    return _back(document_id, f"section-{suggestion.section_id}")
