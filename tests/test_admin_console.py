"""The admin console lists every model with its columns and filters; revisions are read-only."""

from __future__ import annotations

from django.contrib import admin
from django.urls import reverse

from tests.support.factories import PASSWORD, make_user
from webapp.documents import services
from webapp.documents.models import Revision


def test_every_model_has_a_working_list_and_change_page(client, document, owner):
    section = document.sections.first()
    services.section_save_text(section_id=section.id, user=owner, text="Hello.", expected_version=1)
    make_user("root", is_staff=True, is_superuser=True)
    client.login(username="root", password=PASSWORD)
    ours = [m for m in admin.site._registry if m._meta.app_label in ("projects", "documents")]
    assert {m.__name__ for m in ours} >= {"Project", "Membership", "Document", "Section", "Revision",
                                          "Source", "SourceChunk"}
    for model in ours:
        info = (model._meta.app_label, model._meta.model_name)
        listing = client.get(reverse("admin:{}_{}_changelist".format(*info)) + "?q=a")
        assert listing.status_code == 200, model
        row = model.objects.first()
        if row is not None:
            assert client.get(reverse("admin:{}_{}_change".format(*info), args=[row.pk])).status_code == 200


def test_revisions_cannot_be_changed_or_deleted_in_the_admin(client, document, owner):
    make_user("root", is_staff=True, is_superuser=True)
    client.login(username="root", password=PASSWORD)
    revision = Revision.objects.first()
    url = reverse("admin:documents_revision_change", args=[revision.pk])
    client.post(url, {"content": "tampered"})
    revision.refresh_from_db()
    assert revision.content != "tampered"
    assert client.get(reverse("admin:documents_revision_delete", args=[revision.pk])).status_code == 403
    assert client.get(reverse("admin:documents_revision_add")).status_code == 403
