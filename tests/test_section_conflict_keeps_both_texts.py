"""Two people save the same section from the same starting version: the second sees a conflict,
and their text is kept as a revision, never lost."""

from __future__ import annotations

import pytest
from django.urls import reverse

from tests.support.factories import PASSWORD
from webapp.documents import services
from webapp.documents.models import Revision, RevisionKind


def test_the_second_save_conflicts_and_its_text_is_kept(project, document, owner, editor):
    section = document.sections.first()
    start = section.version
    services.section_save_text(section_id=section.id, user=owner, text="Gulls are loud.", expected_version=start)
    with pytest.raises(services.SectionConflict) as raised:
        services.section_save_text(section_id=section.id, user=editor, text="Gulls are clever.",
                                   expected_version=start)
    section.refresh_from_db()
    assert section.text == "Gulls are loud."
    kept = Revision.objects.get(pk=raised.value.revision.pk)
    assert kept.kind == RevisionKind.CONFLICT
    assert kept.content == "Gulls are clever." and kept.author == editor


def test_the_edit_page_shows_the_conflict_and_keeps_what_was_typed(client, document, owner, editor):
    section = document.sections.first()
    url = reverse("section_edit", args=[document.id, section.id])
    client.login(username=editor.username, password=PASSWORD)
    page = client.get(url)
    version = page.context["form"].initial["version"]
    services.section_save_text(section_id=section.id, user=owner, text="Owner's words.",
                               expected_version=version)

    response = client.post(url, {"text": "Editor's words.", "version": version})

    assert response.status_code == 200
    body = response.content.decode()
    assert "someone else changed this section" in body
    assert "Owner&#x27;s words." in body  # the current text, shown for merging
    assert response.context["form"].initial["text"] == "Editor's words."
    assert Revision.objects.filter(kind=RevisionKind.CONFLICT, content="Editor's words.").exists()
    # The next save goes against the new version and wins.
    merged = client.post(url, {"text": "Owner's and editor's words.",
                               "version": response.context["form"].initial["version"]})
    assert merged.status_code == 302
    section.refresh_from_db()
    assert section.text == "Owner's and editor's words."


def test_a_save_that_changes_nothing_makes_no_revision(document, owner):
    section = document.sections.first()
    services.section_save_text(section_id=section.id, user=owner, text="Same.", expected_version=section.version)
    count = Revision.objects.count()
    section.refresh_from_db()
    services.section_save_text(section_id=section.id, user=owner, text="Same.", expected_version=section.version)
    assert Revision.objects.count() == count
