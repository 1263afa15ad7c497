"""Walk every URL of the app as anonymous, non-member, viewer, editor and owner.

Anonymous users are sent to log in; non-members get 404 for every object URL (they cannot
learn that it exists); members whose role is too low get 403; everyone else gets through."""

from __future__ import annotations

import pytest
from django.urls import reverse

from tests.support.factories import PASSWORD, make_document, make_project, make_user
from tests.support.routes import POST_ALSO, PUBLIC, RANK, ROUTES, app_url_names, build_world, url_for


def test_the_table_covers_every_url():
    assert app_url_names() == set(ROUTES) | PUBLIC


@pytest.fixture
def world(db):
    return build_world()


def _expected(role: str, needed: str | None) -> str:
    if role == "anonymous":
        return "login"
    if needed is None:
        return "ok"
    if needed == "invitee" or role == "invitee":  # an invitation is its invitee's alone; they are no member yet
        return "ok" if role == needed else "404"
    if role == "outsider":
        return "404"
    return "ok" if RANK[role] >= RANK[needed] else "403"


def _check(client, method: str, url: str, expected: str) -> None:
    response = client.post(url, {"role": "editor", "direction": "up"}) if method == "POST" else client.get(url)
    where = f"{method} {url}"
    if expected == "login":
        assert response.status_code == 302 and "/accounts/login/" in response["Location"], where
    elif expected == "404":
        assert response.status_code == 404, f"{where} gave {response.status_code}"
    elif expected == "403":
        assert response.status_code == 403, f"{where} gave {response.status_code}"
    else:
        assert response.status_code in (200, 302), f"{where} gave {response.status_code}"
        if response.status_code == 302:
            assert "/accounts/login/" not in response["Location"], where


@pytest.mark.parametrize("role", ["anonymous", "outsider", "invitee", "viewer", "editor", "owner"])
@pytest.mark.parametrize("name", sorted(ROUTES))
def test_every_url_answers_each_role_as_expected(client, world, name, role):
    method, needed = ROUTES[name]
    if role != "anonymous":
        client.login(username=w_user(world, role).username, password=PASSWORD)
    _check(client, method, url_for(name, world), _expected(role, needed))


@pytest.mark.parametrize("role", ["anonymous", "outsider", "viewer", "editor", "owner"])
@pytest.mark.parametrize("name", sorted(POST_ALSO))
def test_writes_behind_forms_check_the_role_on_post(client, world, name, role):
    if role != "anonymous":
        client.login(username=w_user(world, role).username, password=PASSWORD)
    _check(client, "POST", url_for(name, world), _expected(role, POST_ALSO[name]))


def w_user(world: dict, role: str):
    return world["users"][role]


def test_unknown_objects_are_404_even_for_members(client, world):
    client.login(username="olivia", password=PASSWORD)
    d = world["document"].id
    assert client.get(reverse("document_detail", args=[999999])).status_code == 404
    assert client.get(reverse("section_edit", args=[d, 999999])).status_code == 404
    assert client.get(reverse("document_export", args=[d, "exe"])).status_code == 404
    assert client.get(reverse("revision_compare", args=[d]) + "?a=x&b=1").status_code == 404


def test_a_section_of_another_project_is_404_through_a_document_you_can_edit(client, world):
    """Object ids from someone else's project must not leak through your own URLs."""
    stranger = make_user("sam")
    other = make_document(make_project(stranger, name="Secret"), stranger)
    client.login(username="olivia", password=PASSWORD)
    url = reverse("section_edit", args=[world["document"].id, other.sections.first().id])
    assert client.get(url).status_code == 404


def test_logout_ends_the_session(client, world):
    client.login(username="olivia", password=PASSWORD)
    client.post(reverse("logout"))
    assert "/accounts/login/" in client.get(reverse("project_list"))["Location"]


def test_the_admin_is_for_staff_only(client, world):
    client.login(username="olivia", password=PASSWORD)
    response = client.get("/admin/")
    assert response.status_code == 302 and "/admin/login/" in response["Location"]
