from __future__ import annotations

from django.contrib import admin
from django.shortcuts import redirect
from django.urls import include, path

from webapp.documents import views as documents
from webapp.health import healthz
from webapp.projects import views as projects
from webapp.runs import views as runs


def home(request):
    return redirect("project_list" if request.user.is_authenticated else "login")


P = "projects/<int:project_id>/"
D = "documents/<int:document_id>/"

urlpatterns = [
    path("", home, name="home"),
    path("healthz", healthz, name="healthz"),
    path("admin/", admin.site.urls),
    path("accounts/", include("webapp.accounts.urls")),
    path("projects/", projects.project_list, name="project_list"),
    path("projects/new/", projects.project_create, name="project_create"),
    path(P, projects.project_detail, name="project_detail"),
    path(P + "settings/", projects.project_settings, name="project_settings"),
    path(P + "members/", projects.member_list, name="member_list"),
    path(P + "members/<int:membership_id>/role/", projects.member_role, name="member_role"),
    path(P + "members/<int:membership_id>/remove/", projects.member_remove, name="member_remove"),
    path(P + "invitations/<int:invitation_id>/cancel/", projects.invitation_cancel, name="invitation_cancel"),
    path("invitations/<int:invitation_id>/accept/", projects.invitation_accept, name="invitation_accept"),
    path("invitations/<int:invitation_id>/decline/", projects.invitation_decline, name="invitation_decline"),
    path(P + "sources/", documents.source_list, name="source_list"),
    path(P + "sources/<int:source_id>/", documents.source_detail, name="source_detail"),
    path(P + "sources/<int:source_id>/download/", documents.source_download, name="source_download"),
    path(P + "sources/<int:source_id>/retry/", documents.source_retry, name="source_retry"),
    path(P + "sources/<int:source_id>/delete/", documents.source_delete, name="source_delete"),
    path(P + "documents/new/", documents.document_create, name="document_create"),
    path(D, runs.document_detail, name="document_detail"),
    path(D + "state/", runs.document_state, name="document_state"),
    path(D + "live/", runs.document_live, name="document_live"),
    path(D + "brief/", documents.document_brief, name="document_brief"),
    path(D + "delete/", documents.document_delete, name="document_delete"),
    path(D + "outline/", documents.outline_edit, name="outline_edit"),
    path(D + "sections/<int:section_id>/plan/", documents.section_plan, name="section_plan"),
    path(D + "sections/<int:section_id>/move/", documents.section_move, name="section_move"),
    path(D + "sections/<int:section_id>/delete/", documents.section_delete, name="section_delete"),
    path(D + "sections/<int:section_id>/edit/", documents.section_edit, name="section_edit"),
    path(D + "history/", documents.history, name="history"),
    path(D + "history/compare/", documents.revision_compare, name="revision_compare"),
    path(D + "revisions/<int:revision_id>/", documents.revision_detail, name="revision_detail"),
    path(D + "revisions/<int:revision_id>/restore/", documents.revision_restore, name="revision_restore"),
    path(D + "export/<str:fmt>/", documents.document_export, name="document_export"),
    path(D + "export/<str:fmt>/review/", runs.document_review_copy, name="document_review_copy"),
    path(D + "runs/", runs.run_list, name="run_list"),
    path(D + "runs/start/", runs.run_start, name="run_start"),
    path(D + "runs/<int:run_id>/approve/", runs.run_approve, name="run_approve"),
    path(D + "runs/<int:run_id>/cancel/", runs.run_cancel, name="run_cancel"),
    path(D + "sections/<int:section_id>/regenerate/", runs.section_regenerate, name="section_regenerate"),
    path(D + "sections/<int:section_id>/take-over/", runs.section_take_over, name="section_take_over"),
    path(D + "sections/<int:section_id>/rewrite/", runs.section_rewrite, name="section_rewrite"),
    path(D + "sections/<int:section_id>/comment/", runs.comment_start, name="comment_start"),
    path(D + "comments/<int:comment_id>/reply/", runs.comment_reply, name="comment_reply"),
    path(D + "comments/<int:comment_id>/resolve/", runs.comment_resolve, name="comment_resolve"),
    path(D + "sections/<int:section_id>/suggest/", runs.suggestion_propose, name="suggestion_propose"),
    path(D + "sections/<int:section_id>/ask/", runs.section_ask, name="section_ask"),
    path(D + "suggestions/<int:suggestion_id>/accept/", runs.suggestion_accept, name="suggestion_accept"),
    path(D + "suggestions/<int:suggestion_id>/reject/", runs.suggestion_reject, name="suggestion_reject"),
]
