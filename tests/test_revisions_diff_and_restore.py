"""Every change is a revision; any two can be compared; any one can be restored, as a new revision."""

from __future__ import annotations

from django.urls import reverse

from tests.support.factories import PASSWORD
from webapp.documents import revisions, services
from webapp.documents.models import Revision, RevisionKind, Section


def _save(section, user, text):
    section.refresh_from_db()
    return services.section_save_text(section_id=section.id, user=user, text=text,
                                      expected_version=section.version)


def test_text_edits_make_revisions_with_who_and_what(document, owner, editor):
    section = document.sections.first()
    _save(section, owner, "The herring gull is common.")
    _save(section, editor, "The herring gull is very common on piers.")
    revisions = list(section.revisions.order_by("id"))
    assert [r.author for r in revisions] == [owner, editor]
    assert revisions[-1].content == "The herring gull is very common on piers."
    assert revisions[-1].kind == RevisionKind.TEXT


def test_word_diff_marks_added_and_removed_words():
    pieces = revisions.revision_diff("The gull is common.", "The gull is very common on piers.")
    added = "".join(p.text for p in pieces if p.op == "added")
    removed = "".join(p.text for p in pieces if p.op == "removed")
    assert "very" in added and "piers." in added
    assert "common." in removed
    assert "".join(p.text for p in pieces if p.op != "removed") == "The gull is very common on piers."


def test_compare_page_shows_the_diff_between_any_two(client, document, owner):
    section = document.sections.first()
    _save(section, owner, "One two three.")
    _save(section, owner, "One two four.")
    _save(section, owner, "One five four.")
    first, _, last = section.revisions.order_by("id")
    client.login(username=owner.username, password=PASSWORD)
    response = client.get(reverse("revision_compare", args=[document.id]) + f"?a={last.id}&b={first.id}")
    body = response.content.decode()
    assert response.status_code == 200
    assert "<del>two three.</del>" in body and "<ins>five four.</ins>" in body


def test_restoring_text_makes_a_new_revision(client, document, owner, editor):
    section = document.sections.first()
    _save(section, owner, "Original text.")
    _save(section, editor, "Rewritten text.")
    original = section.revisions.order_by("id").first()
    client.login(username=editor.username, password=PASSWORD)
    response = client.post(reverse("revision_restore", args=[document.id, original.id]))
    assert response.status_code == 302
    section.refresh_from_db()
    assert section.text == "Original text."
    newest = section.revisions.order_by("-id").first()
    assert newest.kind == RevisionKind.RESTORE and newest.restored_from == original
    assert newest.author == editor


def test_restoring_an_outline_brings_back_a_deleted_section_with_its_text(document, owner):
    gulls = document.sections.get(heading="Gulls")
    _save(gulls, owner, "Gulls nest on cliffs.")
    services.section_move(section=document.sections.get(heading="Terns"), user=owner, direction="up")
    before_delete = document.revisions.filter(outline__isnull=False).order_by("-id").first()
    gulls.refresh_from_db()
    services.section_delete(section=gulls, user=owner)
    assert not Section.objects.filter(heading="Gulls").exists()

    revisions.revision_restore(revision=before_delete, user=owner)

    headings = [s.heading for s, _, _ in document.section_tree()]
    assert headings == ["Introduction", "Terns", "Gulls"]
    assert document.sections.get(heading="Gulls").text == "Gulls nest on cliffs."
    assert document.revisions.order_by("-id").first().kind == RevisionKind.RESTORE


def test_restoring_text_of_a_deleted_section_explains_what_to_do(document, owner):
    section = document.sections.first()
    _save(section, owner, "Doomed text.")
    revision = section.revisions.get()
    section.delete()
    revision.refresh_from_db()
    try:
        revisions.revision_restore(revision=revision, user=owner)
    except revisions.RestoreError as error:
        assert "outline revision" in str(error)
    else:
        raise AssertionError("restore should have been refused")


def test_outline_edits_nest_and_unnest(document, owner):
    intro, gulls, terns = (document.sections.get(heading=h) for h in ("Introduction", "Gulls", "Terns"))
    services.section_move(section=terns, user=owner, direction="indent")
    tree = [(s.heading, depth, number) for s, depth, number in document.section_tree()]
    assert tree == [("Introduction", 0, "1"), ("Gulls", 0, "2"), ("Terns", 1, "2.1")]
    services.section_move(section=Section.objects.get(pk=terns.pk), user=owner, direction="outdent")
    tree = [(s.heading, depth) for s, depth, _ in document.section_tree()]
    assert tree == [("Introduction", 0), ("Gulls", 0), ("Terns", 0)]
    outline = document.revisions.filter(outline__isnull=False).order_by("-id").first()
    assert "Moved" in outline.summary and "3. Terns" in outline.content


def test_history_page_lists_revisions_for_viewers(client, document, owner, viewer):
    section = document.sections.first()
    _save(section, owner, "<script>alert(1)</script> Safe?")
    client.login(username=viewer.username, password=PASSWORD)
    response = client.get(reverse("history", args=[document.id]))
    assert response.status_code == 200
    assert Revision.objects.filter(document=document).count() == len(response.context["revisions"])
    detail = client.get(reverse("revision_detail", args=[document.id, section.revisions.get().id]))
    assert b"<script>alert(1)</script>" not in detail.content
    assert b"&lt;script&gt;" in detail.content
    page = client.get(reverse("document_detail", args=[document.id]))
    assert b"<script>alert(1)</script>" not in page.content
