"""Walk every URL of the app as anonymous, non-member, viewer, editor and owner.

Anonymous users are sent to log in; non-members get 404 for every object URL (they cannot
learn that it exists); members whose role is too low get 403; everyone else gets through."""

from __future__ import annotations

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.urls import URLPattern, URLResolver, get_resolver, reverse

from tests.support.factories import PASSWORD, make_document, make_project, make_user
from webapp.documents import sources
from webapp.documents.models import Revision
from webapp.runs.models import RunStatus, Suggestion, WritingRun

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
    "source_list": ("GET", "viewer"),
    "source_detail": ("GET", "viewer"),
    "source_download": ("GET", "viewer"),
    "source_delete": ("POST", "editor"),
    "document_create": ("GET", "editor"),
    "document_detail": ("GET", "viewer"),
    "document_state": ("GET", "viewer"),
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
    "run_list": ("GET", "viewer"),
    "run_start": ("POST", "editor"),
    "run_approve": ("POST", "editor"),
    "run_cancel": ("POST", "editor"),
    "section_regenerate": ("POST", "editor"),
    "section_take_over": ("POST", "editor"),
    "suggestion_accept": ("POST", "editor"),
    "suggestion_reject": ("POST", "editor"),
}
# Writes that are also reachable with GET (the form) must refuse the POST to lower roles too.
POST_ALSO = {"member_list": "owner", "source_list": "editor", "project_settings": "owner",
             "document_brief": "editor", "outline_edit": "editor", "section_edit": "editor",
             "document_create": "editor"}
RANK = {"viewer": 1, "editor": 2, "owner": 3}


def _app_url_names() -> set[str]:
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


def test_the_table_covers_every_url():
    assert _app_url_names() == set(ROUTES) | PUBLIC


@pytest.fixture
def world(db):
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
    users = {"owner": owner, "editor": editor, "viewer": viewer, "outsider": outsider}
    return {"users": users, "project": project, "document": document, "section": section,
            "source": source, "revision": revision, "membership": membership, "run": run,
            "suggestion": suggestion}


def _url(name: str, w: dict) -> str:
    p, d = w["project"].id, w["document"].id
    kwargs = {
        "project_detail": {"project_id": p}, "project_settings": {"project_id": p},
        "member_list": {"project_id": p},
        "member_role": {"project_id": p, "membership_id": w["membership"].id},
        "member_remove": {"project_id": p, "membership_id": w["membership"].id},
        "source_list": {"project_id": p},
        "source_detail": {"project_id": p, "source_id": w["source"].id},
        "source_delete": {"project_id": p, "source_id": w["source"].id},
        "source_download": {"project_id": p, "source_id": w["source"].id},
        "document_create": {"project_id": p},
        "document_export": {"document_id": d, "fmt": "md"},
        "revision_detail": {"document_id": d, "revision_id": w["revision"].id},
        "revision_restore": {"document_id": d, "revision_id": w["revision"].id},
        "run_approve": {"document_id": d, "run_id": w["run"].id},
        "run_cancel": {"document_id": d, "run_id": w["run"].id},
        "suggestion_accept": {"document_id": d, "suggestion_id": w["suggestion"].id},
        "suggestion_reject": {"document_id": d, "suggestion_id": w["suggestion"].id},
    }.get(name)
    if kwargs is None and name.startswith("section_"):
        kwargs = {"document_id": d, "section_id": w["section"].id}
    elif kwargs is None and name in ("document_detail", "document_state", "document_brief", "document_delete",
                                     "outline_edit", "history", "revision_compare", "run_list", "run_start"):
        kwargs = {"document_id": d}
    url = reverse(name, kwargs=kwargs)
    if name == "revision_compare":
        url += f"?a={w['revision'].id}&b={w['revision'].id}"
    return url


def _expected(role: str, needed: str | None) -> str:
    if role == "anonymous":
        return "login"
    if needed is None:
        return "ok"
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


@pytest.mark.parametrize("role", ["anonymous", "outsider", "viewer", "editor", "owner"])
@pytest.mark.parametrize("name", sorted(ROUTES))
def test_every_url_answers_each_role_as_expected(client, world, name, role):
    method, needed = ROUTES[name]
    if role != "anonymous":
        client.login(username=w_user(world, role).username, password=PASSWORD)
    _check(client, method, _url(name, world), _expected(role, needed))


@pytest.mark.parametrize("role", ["anonymous", "outsider", "viewer", "editor", "owner"])
@pytest.mark.parametrize("name", sorted(POST_ALSO))
def test_writes_behind_forms_check_the_role_on_post(client, world, name, role):
    if role != "anonymous":
        client.login(username=w_user(world, role).username, password=PASSWORD)
    _check(client, "POST", _url(name, world), _expected(role, POST_ALSO[name]))


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
