"""Every URL of the app: which role each needs, and a world with one of every object so each
can be built (tests/test_permissions_every_url.py walks them per role, the screenshot test
walks the pages at phone and laptop widths)."""

from __future__ import annotations

from django.core.files.uploadedfile import SimpleUploadedFile
from django.urls import URLPattern, URLResolver, get_resolver, reverse

from tests.support.factories import make_document, make_project, make_user
from webapp.documents import sources
from webapp.documents.models import Revision
from webapp.projects.models import Invitation
from webapp.runs.models import Comment, RunStatus, Suggestion, WritingRun

PUBLIC = {"signup", "login", "logout", "healthz"}

# name: (method, least role needed; None = any logged-in user, "admin" = staff only)
ROUTES = {
    "home": ("GET", None),
    "password_change": ("GET", None),
    "password_change_done": ("GET", None),
    "project_list": ("GET", None),
    "project_create": ("GET", None),
    "project_detail": ("GET", "viewer"),
    "project_settings": ("GET", "owner"),
    "member_list": ("GET", "viewer"),
    "member_role": ("POST", "owner"),
    "member_remove": ("POST", "owner"),
    "invitation_cancel": ("POST", "owner"),
    "invitation_accept": ("POST", "invitee"),
    "invitation_decline": ("POST", "invitee"),
    "source_list": ("GET", "viewer"),
    "source_detail": ("GET", "viewer"),
    "source_download": ("GET", "viewer"),
    "source_delete": ("POST", "editor"),
    "source_retry": ("POST", "editor"),
    "document_create": ("GET", "editor"),
    "document_detail": ("GET", "viewer"),
    "document_state": ("GET", "viewer"),
    "document_live": ("GET", "viewer"),
    "document_brief": ("GET", "editor"),
    "document_delete": ("POST", "owner"),
    "outline_edit": ("GET", "editor"),
    "section_plan": ("POST", "editor"),
    "section_move": ("POST", "editor"),
    "section_delete": ("POST", "editor"),
    "section_edit": ("GET", "editor"),
    "history": ("GET", "viewer"),
    "revision_compare": ("GET", "viewer"),
    "revision_detail": ("GET", "viewer"),
    "revision_restore": ("POST", "editor"),
    "document_export": ("GET", "viewer"),
    "document_review_copy": ("GET", "viewer"),
    "run_list": ("GET", "viewer"),
    "run_start": ("POST", "editor"),
    "run_approve": ("POST", "editor"),
    "run_cancel": ("POST", "editor"),
    "section_regenerate": ("POST", "editor"),
    "section_take_over": ("POST", "editor"),
    "section_rewrite": ("POST", "editor"),
    "comment_start": ("POST", "viewer"),  # a comment changes no text: any member may comment
    "comment_reply": ("POST", "viewer"),
    "comment_resolve": ("POST", "viewer"),  # the service says who may (an editor, or the thread's author)
    "suggestion_propose": ("POST", "editor"),
    "section_ask": ("POST", "editor"),
    "suggestion_accept": ("POST", "editor"),
    "suggestion_reject": ("POST", "editor"),
}
# Writes that are also reachable with GET (the form) must refuse the POST to lower roles too.
POST_ALSO = {"member_list": "owner", "source_list": "editor", "project_settings": "owner",
             "document_brief": "editor", "outline_edit": "editor", "section_edit": "editor",
             "document_create": "editor"}
RANK = {"viewer": 1, "editor": 2, "owner": 3}


def app_url_names() -> set[str]:
    names: set[str] = set()

    def walk(patterns, namespace=None):
        for pattern in patterns:
            if isinstance(pattern, URLResolver):
                if pattern.namespace == "admin":
                    continue
                walk(pattern.url_patterns, pattern.namespace)
            elif isinstance(pattern, URLPattern) and pattern.name:
                names.add(pattern.name)

    walk(get_resolver().url_patterns)
    return names


def build_world() -> dict:
    """One of everything a URL can name: a project with an owner, an editor, a viewer (and an
    outsider), a document with sections, a source, a revision, a finished run and a suggestion."""
    owner, editor, viewer, outsider = (make_user(n) for n in ("olivia", "edgar", "vera", "oscar"))
    project = make_project(owner, editors=[editor], viewers=[viewer])
    document = make_document(project, owner)
    section = document.sections.order_by("order").last()
    source = sources.source_upload(project=project, user=owner,
                                    upload=SimpleUploadedFile("notes.txt", b"Terns dive."))
    revision = Revision.objects.filter(document=document).order_by("id").first()
    membership = project.memberships.get(user=viewer)
    run = WritingRun.objects.create(document=document, created_by=owner, status=RunStatus.DONE)
    suggestion = Suggestion.objects.create(document=document, section=section, role="reviewer", kind="repetition",
                                           original="x", reason="test")
    comment = Comment.objects.create(document=document, section=section, author=owner, body="Why?", quote="x")
    invitee = make_user("ivy")
    invitation = Invitation.objects.create(project=project, user=invitee, role="editor", invited_by=owner)
    users = {"owner": owner, "editor": editor, "viewer": viewer, "outsider": outsider, "invitee": invitee}
    return {"users": users, "project": project, "document": document, "section": section,
            "source": source, "revision": revision, "membership": membership, "run": run,
            "suggestion": suggestion, "invitation": invitation, "comment": comment}


def url_for(name: str, w: dict) -> str:
    p, d = w["project"].id, w["document"].id
    kwargs = {
        "project_detail": {"project_id": p}, "project_settings": {"project_id": p},
        "member_list": {"project_id": p},
        "member_role": {"project_id": p, "membership_id": w["membership"].id},
        "member_remove": {"project_id": p, "membership_id": w["membership"].id},
        "invitation_cancel": {"project_id": p, "invitation_id": w["invitation"].id},
        "invitation_accept": {"invitation_id": w["invitation"].id},
        "invitation_decline": {"invitation_id": w["invitation"].id},
        "source_list": {"project_id": p},
        "source_detail": {"project_id": p, "source_id": w["source"].id},
        "source_delete": {"project_id": p, "source_id": w["source"].id},
        "source_retry": {"project_id": p, "source_id": w["source"].id},
        "source_download": {"project_id": p, "source_id": w["source"].id},
        "document_create": {"project_id": p},
        "document_export": {"document_id": d, "fmt": "md"},
        "document_review_copy": {"document_id": d, "fmt": "docx"},
        "revision_detail": {"document_id": d, "revision_id": w["revision"].id},
        "revision_restore": {"document_id": d, "revision_id": w["revision"].id},
        "run_approve": {"document_id": d, "run_id": w["run"].id},
        "run_cancel": {"document_id": d, "run_id": w["run"].id},
        "suggestion_accept": {"document_id": d, "suggestion_id": w["suggestion"].id},
        "suggestion_reject": {"document_id": d, "suggestion_id": w["suggestion"].id},
        "suggestion_propose": {"document_id": d, "section_id": w["section"].id},
        "comment_start": {"document_id": d, "section_id": w["section"].id},
        "comment_reply": {"document_id": d, "comment_id": w["comment"].id},
        "comment_resolve": {"document_id": d, "comment_id": w["comment"].id},
    }.get(name)
    if kwargs is None and name.startswith("section_"):
        kwargs = {"document_id": d, "section_id": w["section"].id}
    elif kwargs is None and name in ("document_detail", "document_state", "document_live", "document_brief",
                                     "document_delete", "outline_edit", "history", "revision_compare", "run_list",
                                     "run_start"):
        kwargs = {"document_id": d}
    url = reverse(name, kwargs=kwargs)
    if name == "revision_compare":
        url += f"?a={w['revision'].id}&b={w['revision'].id}"
    return url
