"""Sentences with a date, number or name that neither the brief nor a source states are marked
for people ("check this"): the reviewer lists them, the editor marks them, and the review copy
of every export marks and lists them. A cited sentence carries its citation instead."""

from __future__ import annotations

import io

import pytest
from django.urls import reverse

from agents.roles.reviewer import review, review_claims
from webapp.documents import services as documents
from webapp.documents.models import Source, SourceChunk
from webapp.runs import reviewing, suggestions
from webapp.runs.models import SuggestionStatus

INVENTED = "Inventors like Christopher Columbus helped build the first bicycle back in the year 1760."
PLAIN = "Riding a bicycle takes balance and a little practice."


def test_a_sentence_with_an_invented_date_and_name_is_marked_and_its_claims_named():
    found = review_claims([("1", "Early bicycles", f"{PLAIN} {INVENTED}")], known="The history of the bicycle")
    assert [(p.original, p.kind, p.replacement) for p in found] == [(INVENTED, "claim", "")]
    assert "“1760”" in found[0].reason and "“Christopher Columbus”" in found[0].reason


def test_centuries_and_decades_are_claims_too():
    from agents import claims

    assert claims.claims("He was the greatest mind of the 17th century and of the 1760s.") == ["17th", "1760s"]
    found = review_claims([("1", "Life", "Gutenberg printed his Bible in the 14th century.")], known="printing")
    assert "“14th”" in found[0].reason


def test_claims_the_brief_or_a_source_states_or_a_citation_backs_are_not_marked():
    sources = "The draisine of 1817, built by Karl Drais, had no pedals."
    sections = [("1", "Origins", "The first machine came in 1817 from Karl Drais in Mannheim [1]. "
                                 "It was built by Karl Drais in 1817. It sold for 40 florins.")]
    found = review_claims(sections, known=f"The history of the bicycle\n{sources}")
    assert [p.original for p in found] == ["It sold for 40 florins."]  # 40 is in no source


def test_the_reviewer_marks_claims_without_a_model_and_gives_a_span_one_proposal():
    sections = [("1", "A", f"This section explains bicycles in 1760. {INVENTED}"), ("2", "B", PLAIN)]
    kinds = {(p.original, p.kind) for p in review(None, "Bicycles", sections)}
    assert kinds == {("This section explains bicycles in 1760.", "meta"), (INVENTED, "claim")}


def _write(document, owner, texts):
    for heading, text in texts.items():
        section = document.sections.get(heading=heading)
        documents.section_save_text(section_id=section.id, user=owner, text=text, expected_version=section.version)


def _source(document, text):
    source = Source.objects.create(project=document.project, title="Field notes", original_name="notes.txt",
                                   kind="txt", status="ready", text=text)
    SourceChunk.objects.create(source=source, index=0, text=text, char_start=0, char_end=len(text))


@pytest.fixture
def checked(document, owner):
    """Gulls states a figure a source holds; Terns one that nothing holds."""
    _source(document, "Arctic terns fly 70,000 km a year between the poles.")
    _write(document, owner, {"Gulls": "Arctic terns fly 70,000 km a year. Gulls stay near the coast.",
                             "Terns": "Terns dive for fish. Common terns were first named by Carl Linnaeus in 1758."})
    return reviewing.review_document(document=document)


def test_the_reviewer_stores_each_claim_to_check_anchored_in_the_shared_text(document, checked):
    claims = [s for s in checked if s.kind == "claim"]
    assert [(s.section.heading, s.original) for s in claims] == [
        ("Terns", "Common terns were first named by Carl Linnaeus in 1758.")]
    assert set(claims[0].anchor) == {"start", "end"}  # the editor marks it where it is


def test_the_page_lists_claims_and_offers_keep_or_remove(client, document, editor, viewer, checked):
    claim = document.suggestions.get(kind="claim")
    client.force_login(editor)
    page = client.get(reverse("document_detail", args=[document.id])).content.decode()
    assert "1 sentence to check" in page and f'href="#suggestion-{claim.id}"' in page
    assert 'data-kind="claim"' in page and "Checked, keep it" in page and "Remove the sentence" in page
    assert "Reviewer (check this):" in page
    client.force_login(viewer)
    page = client.get(reverse("document_detail", args=[document.id])).content.decode()
    assert "1 sentence to check" in page and "Checked, keep it" not in page  # viewers read, never decide


def test_keeping_a_checked_claim_leaves_the_text_and_removing_it_takes_the_sentence_out(document, editor, checked):
    claim = document.suggestions.get(kind="claim")
    terns = document.sections.get(heading="Terns")
    suggestions.suggestion_reject(suggestion=claim, user=editor)  # "Checked, keep it"
    assert document.sections.get(heading="Terns").text == terns.text
    claim.status = SuggestionStatus.OPEN
    claim.save()
    suggestions.suggestion_accept(suggestion=claim, user=editor)  # "Remove the sentence"
    assert document.sections.get(heading="Terns").text == "Terns dive for fish."


def test_the_review_copy_marks_and_lists_open_claims_and_the_plain_export_does_not(client, document, viewer,
                                                                                   checked):
    client.force_login(viewer)
    response = client.get(reverse("document_review_copy", args=[document.id, "md"]))
    assert response.status_code == 200 and '-review.md"' in response["Content-Disposition"]
    text = response.content.decode()
    assert "Carl Linnaeus in 1758. **[check this]**" in text
    assert "## To check" in text and "- Terns: “Common terns were first named by Carl Linnaeus in 1758.”" in text
    assert "check this" not in text.split("## To check")[0].split("Gulls")[1].split("Terns")[0]  # sourced: no mark
    plain = client.get(reverse("document_export", args=[document.id, "md"])).content.decode()
    assert "check this" not in plain and "To check" not in plain

    html = client.get(reverse("document_review_copy", args=[document.id, "html"])).content.decode()
    assert "1758. <strong>[check this]</strong>" in html and "<h2>To check</h2>" in html

    from docx import Document as DocxDocument
    docx = DocxDocument(io.BytesIO(client.get(reverse("document_review_copy", args=[document.id, "docx"])).content))
    paragraphs = [p.text for p in docx.paragraphs]
    assert any(p.endswith("Carl Linnaeus in 1758. [check this]") for p in paragraphs)
    assert "To check" in paragraphs

    document.suggestions.filter(kind="claim").update(status=SuggestionStatus.REJECTED)  # checked
    text = client.get(reverse("document_review_copy", args=[document.id, "md"])).content.decode()
    assert "check this" not in text and "To check" not in text


def test_outsiders_get_no_review_copy(client, document, outsider, checked):
    client.force_login(outsider)
    assert client.get(reverse("document_review_copy", args=[document.id, "md"])).status_code == 404
