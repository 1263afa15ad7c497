"""Document, outline, history, export and source pages.

Each view authorises through the project membership (non-members get 404, roles too low get 403),
then calls one service. Plain forms for now; the live editor replaces the text form later."""

from __future__ import annotations

import uuid

from django.conf import settings
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import FileResponse, Http404
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.views.decorators.http import require_POST

from webapp.documents import export, revisions, services, sources
from webapp.documents.forms import (
    BriefForm,
    NewDocumentForm,
    SectionAddForm,
    SectionPlanForm,
    SectionTextForm,
    SourceUploadForm,
)
from webapp.documents.models import Document, Revision, Section, Source
from webapp.projects.models import Membership, Role
from webapp.projects.services import project_for_user


def _document(request, document_id: int, role: str = Role.VIEWER) -> tuple[Document, Membership]:
    return services.document_for_user(user=request.user, document_id=document_id, role=role)


def _section(document: Document, section_id: int) -> Section:
    return get_object_or_404(Section, pk=section_id, document=document)


# --- documents -----------------------------------------------------------------------------

@login_required
def document_create(request, project_id: int):
    project, membership = project_for_user(user=request.user, project_id=project_id, role=Role.EDITOR)
    form = NewDocumentForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        document = services.document_create(project=project, user=request.user, **form.cleaned_data)
        messages.success(request, "Document created. Next: plan its outline, with the agents or yourself.")
        return redirect("document_detail", document_id=document.id)
    return render(request, "documents/brief_form.html",
                  {"form": form, "project": project, "membership": membership, "creating": True})


@login_required
def document_brief(request, document_id: int):
    document, membership = _document(request, document_id, Role.EDITOR)
    form = BriefForm(request.POST or None, instance=document)
    if request.method == "POST" and form.is_valid():
        services.document_update_brief(document=document, **form.cleaned_data)
        messages.success(request, "Brief saved.")
        return redirect("document_detail", document_id=document.id)
    return render(request, "documents/brief_form.html",
                  {"form": form, "project": document.project, "document": document, "membership": membership})


@login_required
@require_POST
def document_delete(request, document_id: int):
    document, _ = _document(request, document_id, Role.OWNER)
    project_id, title = document.project_id, document.title
    services.document_delete(document=document)
    messages.success(request, f"Deleted “{title}”.")
    return redirect("project_detail", project_id=project_id)


# --- outline -------------------------------------------------------------------------------

@login_required
def outline_edit(request, document_id: int):
    document, membership = _document(request, document_id, Role.EDITOR)
    form = SectionAddForm(request.POST or None, document=document,
                          initial={"word_budget": 300})
    if request.method == "POST" and form.is_valid():
        data = form.cleaned_data
        services.section_add(document=document, user=request.user, parent=data["parent"],
                             heading=data["heading"], goal=data["goal"],
                             key_points=data["key_points"], word_budget=data["word_budget"])
        messages.success(request, f"Added “{data['heading']}”.")
        return redirect("outline_edit", document_id=document.id)
    rows = [{"section": s, "depth": d, "number": n, "form": SectionPlanForm(instance=s, prefix=f"s{s.id}")}
            for s, d, n in document.section_tree()]
    total = sum(row["section"].word_budget for row in rows if row["depth"] == 0)
    return render(request, "documents/outline_edit.html", {
        "document": document, "project": document.project, "membership": membership,
        "rows": rows, "form": form, "planned_words": total,
    })


@login_required
@require_POST
def section_plan(request, document_id: int, section_id: int):
    document, _ = _document(request, document_id, Role.EDITOR)
    section = _section(document, section_id)
    form = SectionPlanForm(request.POST, instance=section, prefix=f"s{section.id}")
    if form.is_valid():
        services.section_update_plan(section=section, user=request.user, **form.cleaned_data)
        messages.success(request, f"Saved “{section.heading}”.")
    else:
        errors = "; ".join(f"{field}: {' '.join(errs)}" for field, errs in form.errors.items())
        messages.error(request, f"Not saved: {errors}")
    return redirect(reverse("outline_edit", args=[document.id]) + f"#section-{section.id}")


@login_required
@require_POST
def section_move(request, document_id: int, section_id: int):
    document, _ = _document(request, document_id, Role.EDITOR)
    section = _section(document, section_id)
    direction = request.POST.get("direction", "")
    if direction not in {"up", "down", "indent", "outdent"}:
        messages.error(request, "Unknown move.")
    else:
        try:
            services.section_move(section=section, user=request.user, direction=direction)
        except ValueError as error:
            messages.error(request, str(error))
    return redirect(reverse("outline_edit", args=[document.id]) + f"#section-{section.id}")


@login_required
@require_POST
def section_delete(request, document_id: int, section_id: int):
    document, _ = _document(request, document_id, Role.EDITOR)
    section = _section(document, section_id)
    services.section_delete(section=section, user=request.user)
    messages.success(request, f"Deleted “{section.heading}”. The history can bring it back.")
    return redirect("outline_edit", document_id=document.id)


# --- section text --------------------------------------------------------------------------

@login_required
def section_edit(request, document_id: int, section_id: int):
    document, membership = _document(request, document_id, Role.EDITOR)
    section = _section(document, section_id)
    form = SectionTextForm(request.POST or None,
                           initial={"text": section.text, "version": section.version})
    conflict = None
    writer = services.section_writer(section)
    if request.method == "POST" and form.is_valid():
        try:
            services.section_save_text(section_id=section.id, user=request.user,
                                       text=form.cleaned_data["text"],
                                       expected_version=form.cleaned_data["version"])
        except (services.TextTooLong, services.SectionHeld) as error:
            form.add_error("text", str(error))
        except services.SectionConflict as error:
            conflict = error
            section.refresh_from_db()
            # Keep what they typed in the box, but let the next save go against the new version.
            form = SectionTextForm(initial={"text": form.cleaned_data["text"], "version": section.version})
        else:
            messages.success(request, f"Saved “{section.heading}”.")
            return redirect(reverse("document_detail", args=[document.id]) + f"#section-{section.id}")
    return render(request, "documents/section_edit.html", {
        "document": document, "project": document.project, "membership": membership,
        "section": section, "form": form, "conflict": conflict,
        "held": services.held_message(section.heading, writer) if writer else "",
    })


# --- history -------------------------------------------------------------------------------

@login_required
def history(request, document_id: int):
    document, membership = _document(request, document_id)
    listed = document.revisions.select_related("author", "section")
    subject = request.GET.get("subject", "")
    if subject == "outline":
        listed = listed.filter(outline__isnull=False)
    elif subject:
        try:
            listed = listed.filter(section_key=uuid.UUID(subject))
        except ValueError:
            raise Http404("No such section") from None
    subjects = [("outline", "Outline")] + [
        (str(s.key), f"{n} {s.heading}") for s, _, n in document.section_tree()
    ]
    return render(request, "documents/history.html", {
        "document": document, "project": document.project, "membership": membership,
        "revisions": listed[:300], "subjects": subjects, "subject": subject,
        "can_edit": membership.allows(Role.EDITOR),
    })


def _revision(document: Document, revision_id) -> Revision:
    try:
        return get_object_or_404(Revision.objects.select_related("author"), pk=int(revision_id), document=document)
    except (TypeError, ValueError):
        raise Http404("No such revision") from None


def _previous(revision: Revision) -> Revision | None:
    same_subject = Revision.objects.filter(document_id=revision.document_id, id__lt=revision.id)
    if revision.outline is not None:
        same_subject = same_subject.filter(outline__isnull=False)
    else:
        same_subject = same_subject.filter(section_key=revision.section_key)
    return same_subject.order_by("-id").first()


@login_required
def revision_detail(request, document_id: int, revision_id: int):
    document, membership = _document(request, document_id)
    revision = _revision(document, revision_id)
    previous = _previous(revision)
    return render(request, "documents/revision_detail.html", {
        "document": document, "project": document.project, "membership": membership,
        "revision": revision, "previous": previous,
        "diff": revisions.revision_diff(previous.content if previous else "", revision.content),
        "can_edit": membership.allows(Role.EDITOR),
    })


@login_required
def revision_compare(request, document_id: int):
    document, membership = _document(request, document_id)
    old = _revision(document, request.GET.get("a"))
    new = _revision(document, request.GET.get("b"))
    if old.created_at > new.created_at or (old.created_at == new.created_at and old.id > new.id):
        old, new = new, old
    return render(request, "documents/revision_compare.html", {
        "document": document, "project": document.project, "membership": membership,
        "old": old, "new": new, "diff": revisions.revision_diff(old.content, new.content),
    })


@login_required
@require_POST
def revision_restore(request, document_id: int, revision_id: int):
    document, _ = _document(request, document_id, Role.EDITOR)
    revision = _revision(document, revision_id)
    try:
        revisions.revision_restore(revision=revision, user=request.user)
    except (revisions.RestoreError, services.TextTooLong, services.SectionHeld) as error:
        messages.error(request, str(error))
        return redirect("revision_detail", document_id=document.id, revision_id=revision.id)
    what = "the outline" if revision.outline is not None else f"“{revision.heading}”"
    messages.success(request, f"Restored {what}.")
    return redirect("document_detail", document_id=document.id)


# --- export --------------------------------------------------------------------------------

@login_required
def document_export(request, document_id: int, fmt: str):
    document, _ = _document(request, document_id)
    return export.download(document, fmt)


# --- sources -------------------------------------------------------------------------------

@login_required
def source_list(request, project_id: int):
    project, membership = project_for_user(user=request.user, project_id=project_id)
    form = SourceUploadForm()
    if request.method == "POST":
        project, membership = project_for_user(user=request.user, project_id=project_id, role=Role.EDITOR)
        # Refuse an oversized body before Django reads it into a temporary file.
        length = int(request.META.get("CONTENT_LENGTH") or 0)
        if length > settings.SOURCE_MAX_BYTES + 64 * 1024:
            messages.error(request, f"That upload is {length / 1_048_576:.1f} MB; the limit is "
                                    f"{settings.SOURCE_MAX_BYTES / 1_048_576:.1f} MB per file.")
            return redirect("source_list", project_id=project.id)
        form = SourceUploadForm(request.POST, request.FILES)
        if form.is_valid():
            try:
                source = sources.source_upload(project=project, user=request.user,
                                                upload=form.cleaned_data["file"],
                                                title=form.cleaned_data["title"])
            except sources.SourceRejected as error:
                form.add_error("file", str(error))
            else:
                messages.success(request, f"Uploaded “{source.title}”. Its text is being extracted.")
                return redirect("source_list", project_id=project.id)
    return render(request, "documents/source_list.html", {
        "project": project, "membership": membership, "sources": project.sources.all(), "form": form,
        "can_edit": membership.allows(Role.EDITOR),
        "max_mb": settings.SOURCE_MAX_BYTES / 1_048_576,
        "extensions": ", ".join(sorted(settings.SOURCE_EXTENSIONS)),
    })


def _source(request, project_id: int, source_id: int, role: str = Role.VIEWER):
    project, membership = project_for_user(user=request.user, project_id=project_id, role=role)
    return get_object_or_404(Source, pk=source_id, project=project), membership


@login_required
def source_detail(request, project_id: int, source_id: int):
    source, membership = _source(request, project_id, source_id)
    return render(request, "documents/source_detail.html", {
        "project": source.project, "membership": membership, "source": source,
        "chunks": source.chunks.all()[:200], "can_edit": membership.allows(Role.EDITOR),
    })


@login_required
def source_download(request, project_id: int, source_id: int):
    source, _ = _source(request, project_id, source_id)
    try:
        handle = source.file.open("rb")
    except FileNotFoundError:
        raise Http404("The file is missing from storage") from None
    # Always an attachment: an uploaded HTML file must never render in our origin.
    return FileResponse(handle, as_attachment=True, filename=source.original_name,
                        content_type="application/octet-stream")


@login_required
@require_POST
def source_retry(request, project_id: int, source_id: int):
    source, _ = _source(request, project_id, source_id, Role.EDITOR)
    if source.status == "failed":
        sources.source_retry(source=source)
        messages.success(request, f"Reading “{source.title}” again.")
    return redirect("source_detail", project_id=project_id, source_id=source_id)


@login_required
@require_POST
def source_delete(request, project_id: int, source_id: int):
    source, _ = _source(request, project_id, source_id, Role.EDITOR)
    sources.source_delete(source=source)
    messages.success(request, f"Deleted “{source.title}”.")
    return redirect("source_list", project_id=project_id)
