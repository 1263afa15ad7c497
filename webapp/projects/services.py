"""Workflows on projects and memberships. Views call these; nothing else writes these rows."""

from __future__ import annotations

from django.contrib.auth import get_user_model
from django.core.exceptions import PermissionDenied
from django.db import transaction
from django.db.models import Q
from django.http import Http404

from webapp import events
from webapp.projects.models import Invitation, Membership, Project, Role


class MembershipError(Exception):
    """A membership change that the rules forbid; the message is shown to the user."""


def project_for_user(*, user, project_id: int, role: str = Role.VIEWER) -> tuple[Project, Membership]:
    """The project and the user's membership, or Http404 for anyone who is not a member.

    Non-members get 404 so that they cannot even learn that the project exists; members whose
    role is too low get PermissionDenied (403)."""
    if not user.is_authenticated:
        raise Http404
    membership = (
        Membership.objects.select_related("project").filter(project_id=project_id, user=user).first()
    )
    if membership is None:
        raise Http404("No such project")
    if not membership.allows(role):
        raise PermissionDenied(f"This needs the {role} role; you are {membership.role}.")
    return membership.project, membership


def member_object(*, user, queryset, pk: int, role: str = Role.VIEWER):
    """The row `pk` of `queryset` (anything with a `project`: a document, a source) and the user's
    membership of its project, by the same rule as project_for_user: 404 for a missing row and for
    non-members alike, 403 for a role too low."""
    obj = queryset.filter(pk=pk).first()
    if obj is None:
        raise Http404
    _, membership = project_for_user(user=user, project_id=obj.project_id, role=role)
    return obj, membership


@transaction.atomic
def project_create(*, user, name: str, description: str = "") -> Project:
    project = Project.objects.create(name=name, description=description, created_by=user)
    Membership.objects.create(project=project, user=user, role=Role.OWNER)
    return project


@transaction.atomic
def project_update(*, project: Project, name: str, description: str) -> Project:
    project.name = name
    project.description = description
    project.save(update_fields=["name", "description"])
    return project


def _find_user(identifier: str):
    """The one active account with this username or email, or None (also when several accounts
    share the email): callers say the same either way, so nobody learns who has an account."""
    identifier = identifier.strip()
    if not identifier:
        return None
    matches = list(get_user_model().objects.filter(
        Q(username__iexact=identifier) | Q(email__iexact=identifier), is_active=True)[:2])
    return matches[0] if len(matches) == 1 else None


@transaction.atomic
def invitation_create(*, project: Project, identifier: str, role: str, invited_by=None) -> Invitation | None:
    """Invite the account `identifier` names (username or email) to join as `role`; they join
    when they accept. When no single account matches, the invitation is kept without one (it
    reaches nobody) and listed the same way, so the owner's page tells nobody who has an
    account. None for a member already (the members list shows them)."""
    identifier = identifier.strip()[:254]
    user = _find_user(identifier)
    if user is not None and Membership.objects.filter(project=project, user=user).exists():
        return None
    defaults = {"role": Role(role), "invited_by": invited_by, "invited_as": identifier}
    if user is None:
        invitation, _ = Invitation.objects.update_or_create(project=project, user=None, invited_as=identifier,
                                                            defaults=defaults)
    else:
        invitation, _ = Invitation.objects.update_or_create(project=project, user=user, defaults=defaults)
    return invitation


@transaction.atomic
def invitation_accept(*, invitation: Invitation) -> Membership:
    membership, _ = Membership.objects.get_or_create(project=invitation.project, user=invitation.user,
                                                     defaults={"role": invitation.role})
    invitation.delete()
    return membership


def invitation_decline(*, invitation: Invitation) -> None:
    invitation.delete()


def _other_owner_exists(membership: Membership) -> bool:
    return (
        Membership.objects.select_for_update()
        .filter(project=membership.project, role=Role.OWNER)
        .exclude(pk=membership.pk)
        .exists()
    )


@transaction.atomic
def membership_change_role(*, membership: Membership, role: str) -> Membership:
    role = Role(role)
    if membership.role == Role.OWNER and role != Role.OWNER and not _other_owner_exists(membership):
        raise MembershipError("A project needs at least one owner; make someone else owner first.")
    membership.role = role
    membership.save(update_fields=["role"])
    events.rights_changed(membership.user_id)  # a demoted editor's open editor stops writing at once
    return membership


@transaction.atomic
def membership_remove(*, membership: Membership) -> None:
    if membership.role == Role.OWNER and not _other_owner_exists(membership):
        raise MembershipError("You cannot remove the last owner of a project.")
    membership.delete()
    events.rights_changed(membership.user_id)  # their open sockets close and hear nothing more
