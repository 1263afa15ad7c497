"""Owners invite by username or email (people join when they accept, and nobody learns from an
invitation or a sign-up who has an account), change roles and remove members; a project always
keeps an owner."""

from __future__ import annotations

import pytest
from django.urls import reverse

from tests.support.factories import PASSWORD, make_user
from webapp.projects.models import Membership, Role


@pytest.fixture(autouse=True)
def fresh_log_in_counters():
    """Failed log-ins are counted in Redis for 15 minutes: none may reach the next test."""
    from webapp import redis as shared

    def clear():
        for key in shared.client().scan_iter("scriptorium:login-failures:*"):
            shared.client().delete(key)

    clear()
    yield
    clear()


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


def test_invited_people_join_only_when_they_accept(client, project, owner):
    wendy, xavier = make_user("wendy"), make_user("xavier")
    client.login(username=owner.username, password=PASSWORD)
    url = reverse("member_list", args=[project.id])
    client.post(url, {"identifier": "WENDY@example.com", "role": "viewer"})
    client.post(url, {"identifier": "xavier", "role": "editor"})
    assert not project.memberships.filter(user__in=[wendy, xavier]).exists()  # not members yet
    page = client.get(url).content.decode()
    assert ">WENDY@example.com<" in page and ">xavier<" in page  # what the owner typed
    for person, answer in ((wendy, "accept"), (xavier, "decline")):
        client.login(username=person.username, password=PASSWORD)
        assert client.get(reverse("project_detail", args=[project.id])).status_code == 404  # before answering
        listing = client.get(reverse("project_list")).content.decode()
        assert "invites you to <strong>Field guide</strong>" in listing
        invitation = person.invitations.get()
        client.post(reverse(f"invitation_{answer}", args=[invitation.id]))
    assert dict(project.memberships.values_list("user__username", "role"))["wendy"] == "viewer"
    assert not project.memberships.filter(user=xavier).exists() and not xavier.invitations.exists()
    client.login(username=wendy.username, password=PASSWORD)
    assert client.get(reverse("project_detail", args=[project.id])).status_code == 200


def test_someone_else_s_invitation_is_a_404(client, project, owner, outsider):
    wendy = make_user("wendy")
    client.login(username=owner.username, password=PASSWORD)
    client.post(reverse("member_list", args=[project.id]), {"identifier": "wendy", "role": "editor"})
    invitation = wendy.invitations.get()
    client.login(username=outsider.username, password=PASSWORD)
    assert client.post(reverse("invitation_accept", args=[invitation.id])).status_code == 404
    assert not project.memberships.filter(user=outsider).exists()


def test_inviting_says_the_same_whether_or_not_the_account_exists(client, project, owner, editor):
    make_user("wendy")
    client.login(username=owner.username, password=PASSWORD)
    url = reverse("member_list", args=[project.id])

    def answer(identifier: str) -> str:
        page = client.post(url, {"identifier": identifier, "role": "editor"}, follow=True).content.decode()
        return page.split('id="messages">')[1].split("</div>")[0].replace(identifier, "X")

    assert answer("ghost") == answer("wendy") == answer("ghost@example.com") == answer(editor.username)


def test_the_invited_list_does_not_tell_whether_an_address_has_an_account(client, project, owner):
    """Issue 26: the list showed the matched account's username for a registered address, and
    nothing for an unknown one. Now both show what the owner typed, the same way."""
    make_user("wendy")  # wendy@example.com has an account; ghost@example.com has none
    client.login(username=owner.username, password=PASSWORD)
    url = reverse("member_list", args=[project.id])

    def row(identifier: str) -> str:
        client.post(url, {"identifier": identifier, "role": "editor"})
        page = client.get(url).content.decode()
        listed = page.split("Invited, not yet joined")[1].split("</table>")[0]
        invitation = project.invitations.get(invited_as=identifier)
        return listed.split(f'/invitations/{invitation.id}/')[0].rsplit("<tr>", 1)[1].replace(identifier, "X")

    known, unknown = row("wendy@example.com"), row("ghost@example.com")
    assert known == unknown and "wendy<" not in known
    ghost = project.invitations.get(invited_as="ghost@example.com")
    assert ghost.user is None  # it reaches nobody: a later account with that address is not invited by it
    client.post(reverse("invitation_cancel", args=[project.id, ghost.id]))
    assert not project.invitations.filter(invited_as="ghost@example.com").exists()


def test_sign_up_does_not_tell_whether_an_email_has_an_account(client, owner):
    response = client.post(reverse("signup"), {
        "username": "newbie", "email": owner.email,
        "password1": "a-long-unusual-passphrase", "password2": "a-long-unusual-passphrase"})
    assert response.status_code == 302  # as with any new email


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


def test_log_ins_are_throttled_after_repeated_failures(client, owner):
    """Five wrong passwords for one account: the right one is refused too, with the reason, until
    the window passes (here: the counter is cleared, as its expiry would)."""
    from webapp.accounts import throttle

    url = reverse("login")
    for _ in range(throttle.FAILURES_PER_ACCOUNT):
        response = client.post(url, {"username": owner.username, "password": "wrong"})
        assert "Please enter a correct username and password" in response.content.decode()
    response = client.post(url, {"username": owner.username, "password": PASSWORD})
    assert response.status_code == 200 and "Too many failed log-ins. Try again in 15 minutes." in \
        response.content.decode()
    assert "_auth_user_id" not in client.session
    from webapp import redis as shared

    shared.client().delete(throttle._key("user", owner.username))
    assert client.post(url, {"username": owner.username, "password": PASSWORD}).status_code == 302


def test_one_address_trying_many_accounts_is_throttled_too(client, owner, editor):
    from webapp.accounts import throttle

    url = reverse("login")
    for index in range(throttle.FAILURES_PER_ADDRESS):
        client.post(url, {"username": f"guess{index}", "password": "wrong"})
    response = client.post(url, {"username": editor.username, "password": PASSWORD})
    assert "Too many failed log-ins" in response.content.decode()
