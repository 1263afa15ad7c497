"""Project pages. Each view authorises through project_for_user, then calls one service."""

from __future__ import annotations

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.db.models import Count
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_POST

from webapp.projects import services
from webapp.projects.forms import InviteForm, ProjectForm, RoleForm
from webapp.projects.models import Invitation, Membership, Project, Role


@login_required
def project_list(request):
    projects = (
        Project.objects.filter(memberships__user=request.user)
        .annotate(document_count=Count("documents", distinct=True),
                  member_count=Count("memberships", distinct=True))
        .order_by("name")
    )
    roles = dict(Membership.objects.filter(user=request.user).values_list("project_id", "role"))
    rows = [(project, roles.get(project.id)) for project in projects]
    invitations = request.user.invitations.select_related("project", "invited_by")
    return render(request, "projects/project_list.html", {"rows": rows, "invitations": invitations})


@login_required
def project_create(request):
    form = ProjectForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        project = services.project_create(user=request.user, **form.cleaned_data)
        messages.success(request, f"Created “{project.name}”.")
        return redirect("project_detail", project_id=project.id)
    return render(request, "projects/project_form.html", {"form": form})


@login_required
def project_detail(request, project_id: int):
    project, membership = services.project_for_user(user=request.user, project_id=project_id)
    return render(request, "projects/project_detail.html", {
        "project": project,
        "membership": membership,
        "documents": project.documents.annotate(section_count=Count("sections")),
        "sources": project.sources.all()[:5],
        "source_count": project.sources.count(),
        "can_edit": membership.allows(Role.EDITOR),
    })


@login_required
def project_settings(request, project_id: int):
    project, membership = services.project_for_user(user=request.user, project_id=project_id, role=Role.OWNER)
    form = ProjectForm(request.POST or None, instance=project)
    if request.method == "POST" and form.is_valid():
        services.project_update(project=project, **form.cleaned_data)
        messages.success(request, "Saved.")
        return redirect("project_detail", project_id=project.id)
    return render(request, "projects/project_settings.html", {"project": project, "form": form,
                                                             "membership": membership})


@login_required
def member_list(request, project_id: int):
    project, membership = services.project_for_user(user=request.user, project_id=project_id)
    is_owner = membership.allows(Role.OWNER)
    form = InviteForm(request.POST or None)
    if request.method == "POST":
        project, membership = services.project_for_user(user=request.user, project_id=project_id, role=Role.OWNER)
        if form.is_valid():
            services.invitation_create(project=project, invited_by=request.user, **form.cleaned_data)
            # The same answer whether or not the account exists: inviting tells nobody who has one.
            messages.success(request, f"If an account matches “{form.cleaned_data['identifier']}”, it is invited as "
                                      f"{Role(form.cleaned_data['role']).label.lower()}; they join when they accept.")
            return redirect("member_list", project_id=project.id)
    members = project.memberships.select_related("user").order_by("user__username")
    invitations = project.invitations.all() if is_owner else []
    return render(request, "projects/member_list.html", {
        "project": project, "membership": membership, "members": members, "form": form,
        "is_owner": is_owner, "roles": Role.choices, "invitations": invitations,
    })


def _own_invitation(request, invitation_id: int) -> Invitation:
    """An invitation to the person asking (anyone else's is a 404)."""
    return get_object_or_404(Invitation.objects.select_related("project"), pk=invitation_id, user=request.user)


@login_required
@require_POST
def invitation_accept(request, invitation_id: int):
    invitation = _own_invitation(request, invitation_id)
    membership = services.invitation_accept(invitation=invitation)
    messages.success(request, f"You joined “{membership.project.name}” as {membership.get_role_display().lower()}.")
    return redirect("project_detail", project_id=membership.project_id)


@login_required
@require_POST
def invitation_decline(request, invitation_id: int):
    invitation = _own_invitation(request, invitation_id)
    services.invitation_decline(invitation=invitation)
    messages.success(request, f"Declined the invitation to “{invitation.project.name}”.")
    return redirect("project_list")


@login_required
@require_POST
def invitation_cancel(request, project_id: int, invitation_id: int):
    project, _ = services.project_for_user(user=request.user, project_id=project_id, role=Role.OWNER)
    invitation = get_object_or_404(Invitation, pk=invitation_id, project=project)
    services.invitation_decline(invitation=invitation)
    messages.success(request, f"Cancelled the invitation of “{invitation.invited_as}”.")
    return redirect("member_list", project_id=project_id)


def _owned_membership(request, project_id: int, membership_id: int) -> Membership:
    project, _ = services.project_for_user(user=request.user, project_id=project_id, role=Role.OWNER)
    return get_object_or_404(Membership.objects.select_related("user", "project"), pk=membership_id, project=project)


@login_required
@require_POST
def member_role(request, project_id: int, membership_id: int):
    target = _owned_membership(request, project_id, membership_id)
    form = RoleForm(request.POST)
    if not form.is_valid():
        messages.error(request, "Choose owner, editor or viewer.")
    else:
        try:
            services.membership_change_role(membership=target, role=form.cleaned_data["role"])
            messages.success(request, f"{target.user.username} is now {target.get_role_display().lower()}.")
        except services.MembershipError as error:
            messages.error(request, str(error))
    return redirect("member_list", project_id=project_id)


@login_required
@require_POST
def member_remove(request, project_id: int, membership_id: int):
    target = _owned_membership(request, project_id, membership_id)
    try:
        services.membership_remove(membership=target)
    except services.MembershipError as error:
        messages.error(request, str(error))
        return redirect("member_list", project_id=project_id)
    messages.success(request, f"Removed {target.user.username} from the project.")
    if target.user_id == request.user.id:
        return redirect("project_list")
    return redirect("member_list", project_id=project_id)
