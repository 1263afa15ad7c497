"""Owners invite by username or email, change roles and remove members; a project always keeps an owner."""

from __future__ import annotations

from django.urls import reverse

from tests.support.factories import PASSWORD, make_user
from webapp.projects.models import Membership, Role


def test_signup_creates_an_account_and_logs_in(client, db):
    response = client.post(reverse("signup"), {
        "username": "newbie", "email": "newbie@example.com",
        "password1": "a-long-unusual-passphrase", "password2": "a-long-unusual-passphrase",
    })
    assert response.status_code == 302
    assert client.get(reverse("project_list")).status_code == 200


def test_creating_a_project_makes_you_its_owner(client, owner):
    client.login(username=owner.username, password=PASSWORD)
    response = client.post(reverse("project_create"), {"name": "Atlas", "description": ""})
    membership = Membership.objects.get(project__name="Atlas")
    assert response.status_code == 302 and membership.user == owner and membership.role == Role.OWNER


def test_invite_by_email_and_by_username(client, project, owner):
    make_user("wendy")
    make_user("xavier")
    client.login(username=owner.username, password=PASSWORD)
    url = reverse("member_list", args=[project.id])
    client.post(url, {"identifier": "WENDY@example.com", "role": "viewer"})
    client.post(url, {"identifier": "xavier", "role": "editor"})
    roles = dict(project.memberships.values_list("user__username", "role"))
    assert roles["wendy"] == "viewer" and roles["xavier"] == "editor"


def test_inviting_nobody_or_a_member_explains_why(client, project, owner, editor):
    client.login(username=owner.username, password=PASSWORD)
    url = reverse("member_list", args=[project.id])
    missing = client.post(url, {"identifier": "ghost", "role": "editor"})
    assert "No user with the username or email" in missing.content.decode()
    again = client.post(url, {"identifier": editor.username, "role": "editor"})
    assert "already a member" in again.content.decode()


def test_change_role_and_remove(client, project, owner, editor):
    client.login(username=owner.username, password=PASSWORD)
    membership = project.memberships.get(user=editor)
    client.post(reverse("member_role", args=[project.id, membership.id]), {"role": "viewer"})
    membership.refresh_from_db()
    assert membership.role == Role.VIEWER
    client.post(reverse("member_remove", args=[project.id, membership.id]))
    assert not project.memberships.filter(user=editor).exists()
    # Removed: the project is now invisible to them.
    client.login(username=editor.username, password=PASSWORD)
    assert client.get(reverse("project_detail", args=[project.id])).status_code == 404


def test_the_last_owner_cannot_be_removed_or_demoted(client, project, owner):
    client.login(username=owner.username, password=PASSWORD)
    own = project.memberships.get(user=owner)
    response = client.post(reverse("member_remove", args=[project.id, own.id]), follow=True)
    assert "last owner" in response.content.decode()
    response = client.post(reverse("member_role", args=[project.id, own.id]), {"role": "editor"}, follow=True)
    assert "at least one owner" in response.content.decode()
    own.refresh_from_db()
    assert own.role == Role.OWNER


def test_with_two_owners_one_may_step_down(client, project, owner, editor):
    project.memberships.filter(user=editor).update(role=Role.OWNER)
    client.login(username=owner.username, password=PASSWORD)
    own = project.memberships.get(user=owner)
    client.post(reverse("member_role", args=[project.id, own.id]), {"role": "editor"})
    own.refresh_from_db()
    assert own.role == Role.EDITOR


def test_password_change(client, owner):
    client.login(username=owner.username, password=PASSWORD)
    response = client.post(reverse("password_change"), {
        "old_password": PASSWORD, "new_password1": "another-long-passphrase",
        "new_password2": "another-long-passphrase"})
    assert response.status_code == 302
    client.logout()
    assert client.login(username=owner.username, password="another-long-passphrase")
