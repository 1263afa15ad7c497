"""A person's first visit, in Debian's Chromium driven by Playwright: sign up, create a project
and a document, build its outline, write a section, read its history, and export it.
Screenshots land in artifacts/ (laptop and phone widths)."""

from __future__ import annotations

from pathlib import Path

from tests.support.browser import BROWSER, shot

pytestmark = BROWSER


def _logged_in(page, base_url: str, username: str):
    from tests.support.factories import PASSWORD

    page.goto(base_url + "/accounts/login/")
    page.get_by_label("Username").fill(username)
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Log in").click()
    return page


def test_first_visit_from_sign_up_to_export(live_server, browser, transactional_db):
    from webapp.documents.models import Section

    page = browser.new_page(viewport={"width": 1280, "height": 900})
    page.goto(live_server.url + "/")
    assert "/accounts/login/" in page.url
    page.get_by_role("link", name="Sign up").first.click()
    page.get_by_label("Username").fill("ada")
    page.get_by_label("Email").fill("ada@example.com")
    page.get_by_label("Password", exact=True).fill("an-unusual-passphrase")
    page.get_by_label("Password confirmation").fill("an-unusual-passphrase")
    page.locator("main").get_by_role("button", name="Sign up").click()
    page.get_by_text("No projects yet.").wait_for()
    shot(page, "01-empty-projects")

    page.get_by_role("button", name="Create your first project", exact=True).click()
    page.get_by_label("Name").fill("Atlas of the coast")
    page.get_by_role("button", name="Create project").click()
    page.get_by_role("heading", name="Atlas of the coast").wait_for()

    page.get_by_role("button", name="Create a document", exact=True).click()
    page.get_by_label("Title").fill("Coastal birds")
    page.get_by_label("Topic").fill("Birds a walker meets on the coast")
    page.get_by_label("Target length (words)").fill("800")
    assert page.get_by_label("Lead").count() == 0  # the finisher writes it; a new brief does not ask
    page.get_by_role("button", name="Create document").click()
    # One obvious next step: plan with the agents, or write the outline yourself.
    page.get_by_text("This document has no outline yet.").wait_for()
    assert page.get_by_role("button", name="Plan with agents").count() == 1
    page.get_by_role("button", name="Write the outline yourself").click()
    page.get_by_text("No sections yet.").wait_for()

    for heading in ("Gulls", "Terns <b>and</b> skuas"):
        add = page.locator("#add-section")
        add.get_by_label("Heading").fill(heading)
        add.get_by_label("Word budget").fill("400")
        add.get_by_role("button", name="Add section").click()
        page.get_by_text(f"Added “{heading}”.").wait_for()
    shot(page, "02-outline")

    page.get_by_role("button", name="Read", exact=True).click()
    page.locator(f"#section-{Section.objects.get(heading='Gulls').id}").get_by_role(
        "button", name="Edit text").click()
    page.get_by_label("Text").fill("Gulls are **loud** and clever.")
    page.get_by_role("button", name="Save").click()
    page.get_by_text("Saved “Gulls”.").wait_for()
    assert page.locator("strong", has_text="loud").count() == 1
    assert page.get_by_role("heading", name="2 Terns <b>and</b> skuas").count() == 1  # escaped, not bold
    shot(page, "03-document")

    page.get_by_role("button", name="History", exact=True).click()
    page.get_by_role("button", name="Compare A with B").click()
    page.locator(".diff").wait_for()
    shot(page, "04-compare")

    page.get_by_role("button", name="All history", exact=True).click()
    page.locator("summary", has_text="Export").click()
    with page.expect_download() as download:
        page.get_by_role("link", name="Markdown (.md)").click()
    text = Path(download.value.path()).read_text()
    assert text.startswith("# Coastal birds") and "## Gulls" in text and "Gulls are **loud**" in text

    phone = browser.new_page(viewport={"width": 390, "height": 844})
    phone.context.add_cookies(page.context.cookies())
    phone.goto(page.url)
    overflow = phone.evaluate("document.documentElement.scrollWidth - window.innerWidth")
    assert overflow <= 1, f"the page scrolls sideways by {overflow}px on a phone"
    shot(phone, "05-history-phone")


def test_a_viewer_sees_no_edit_controls(live_server, browser, transactional_db):
    from tests.support.factories import make_document, make_project, make_user

    owner, viewer = make_user("olga"), make_user("victor")
    document = make_document(make_project(owner, viewers=[viewer]), owner)
    page = _logged_in(browser.new_page(), live_server.url, "victor")
    page.goto(f"{live_server.url}/documents/{document.id}/")
    page.get_by_role("heading", name="Coastal birds").wait_for()
    assert page.get_by_role("button", name="Edit text", exact=True).count() == 0
    assert page.get_by_role("button", name="Outline", exact=True).count() == 0
    response = page.goto(f"{live_server.url}/documents/{document.id}/outline/")
    assert response.status == 403
