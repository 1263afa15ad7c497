"""Every page of the app at 390 px (a phone) and 1280 px (a laptop), in Debian's Chromium against
a real ASGI server: none may scroll sideways. The walk takes every GET page of the URL table
(tests/support/routes.py, which test_permissions_every_url keeps complete), the exported web
page, the error pages and the staff console, with long names and unbroken words in the data.
Screenshots go to artifacts/pages/; with UPDATE_SCREENSHOTS=1 also to docs/screenshots/."""

from __future__ import annotations

import os
from pathlib import Path

from django.urls import reverse

from tests.support.browser import ARTIFACTS, BROWSER, off_the_event_loop
from tests.support.routes import ROUTES, build_world, url_for

pytestmark = BROWSER

DOCS = Path(__file__).resolve().parents[1] / "docs" / "screenshots"
NOT_PAGES = {"document_state", "document_live", "source_download", "document_export",  # JSON, fragments, files
             "document_review_copy"}
WIDTHS = (390, 1280)

OVERFLOWING = """() => {
    const width = document.documentElement.clientWidth;
    if (document.documentElement.scrollWidth <= width) return [];
    const wide = [...document.querySelectorAll("body *")].filter((el) => el.getBoundingClientRect().right > width + 1);
    // The innermost culprits: elements none of whose children overflow too.
    return wide.filter((el) => !wide.some((other) => other !== el && el.contains(other)))
               .slice(0, 5).map((el) => `${el.tagName.toLowerCase()}.${el.className}: ${el.outerHTML.slice(0, 120)}`);
}"""


def _pages(world: dict) -> list[tuple[str, str, str]]:
    """(name, url, who) for every page; who: "owner", "staff" or "anonymous"."""
    pages = [(name, url_for(name, world), "owner") for name, (method, _) in sorted(ROUTES.items())
             if method == "GET" and name not in NOT_PAGES]
    document = world["document"].id
    return pages + [
        ("document_export_html", reverse("document_export", args=[document, "html"]), "export"),
        ("document_review_copy_html", reverse("document_review_copy", args=[document, "html"]), "export"),
        ("not_found", "/documents/999999/", "owner"),
        ("forbidden", reverse("project_settings", args=[world["project"].id]), "viewer"),
        ("login", reverse("login"), "anonymous"),
        ("signup", reverse("signup"), "anonymous"),
        ("admin_index", reverse("admin:index"), "staff"),
        ("admin_training_jobs", reverse("admin:jobs_trainingjob_changelist"), "staff"),
    ]


def _realistic(world: dict) -> None:
    """Long names and unbroken words where people put them."""
    from webapp.documents import services as documents
    from webapp.runs.models import AgentTask

    project, document = world["project"], world["document"]
    project.name = "An atlas of the North Atlantic coastline, its seabirds and its harbours"
    project.save()
    document.title = "Seabirds of the Outer Hebrides: gulls, terns, skuas and the Atlantic puffin"
    document.save()
    section = world["section"]
    section.refresh_from_db()
    documents.section_save_text(
        section_id=section.id, user=world["users"]["owner"], expected_version=section.version,
        text="Counts come from https://example.org/seabird-monitoring-programme/annual-reports/2024/outer-hebrides"
             "-colony-counts-and-productivity-estimates.csv and the Supercalifragilisticexpialidociousness survey.")
    for name in ("Introduction", "Gulls", "Terns"):
        AgentTask.objects.create(run=world["run"], role="writer", status="done", attempts=1, words=120, tokens=160,
                                 section=document.sections.filter(heading=name).first())


def _download(user, url: str) -> str:
    from django.test import Client

    client = Client()
    client.force_login(user)
    response = client.get(url)
    assert response.status_code == 200 and "attachment" in response["Content-Disposition"]
    html = response.content.decode()
    assert '<meta name="viewport"' in html
    return html


def _page_for(browser, server, user, width: int):
    from django.test import Client

    context = browser.new_context(viewport={"width": width, "height": 800})
    if user is not None:
        client = Client()
        client.force_login(user)
        context.add_cookies([{"name": "sessionid", "value": client.cookies["sessionid"].value, "url": server.url}])
    return context.new_page()


def test_every_page_fits_a_phone_and_a_laptop(web_server, browser, transactional_db):
    from tests.support.factories import make_user

    world = off_the_event_loop(build_world)
    off_the_event_loop(_realistic, world)
    staff = make_user("stella")
    staff.is_staff = staff.is_superuser = True
    staff.save()
    users = {"owner": world["users"]["owner"], "viewer": world["users"]["viewer"], "staff": staff, "anonymous": None}
    update = os.environ.get("UPDATE_SCREENSHOTS") == "1"
    (ARTIFACTS / "pages").mkdir(parents=True, exist_ok=True)
    if update:
        DOCS.mkdir(parents=True, exist_ok=True)
    problems, walked = [], 0
    for width in WIDTHS:
        pages = {who: _page_for(browser, web_server, user, width) for who, user in users.items()}
        for name, url, who in _pages(world):
            if who == "export":  # a download: opened as the file a reader would open
                page = pages["owner"]
                page.set_content(_download(world["users"]["owner"], url))
            else:
                page = pages[who]
                response = page.goto(web_server.url + url)
                assert response is not None and response.status < 500, f"{url} gave {response and response.status}"
            if name == "document_detail":
                page.locator("#live-document.live").wait_for()  # the editors are up
                # The Agents panel: one summary line on a phone (it was ~1,600 px of stacked
                # rows before the first word of text), the whole table on a laptop.
                panel = page.evaluate("document.getElementById('runs').getBoundingClientRect().height")
                table = page.locator("details.agents-details table").is_visible()
                if width < 640:
                    assert panel < 250 and not table, f"the Agents panel is {panel} px tall on a phone"
                else:
                    assert table
            walked += 1
            overflowing = page.evaluate(OVERFLOWING)
            if overflowing:
                problems.append(f"{name} at {width} px scrolls sideways: {overflowing}")
            page.screenshot(path=str(ARTIFACTS / "pages" / f"{name}-{width}.png"), full_page=True)
            if update:
                page.screenshot(path=str(DOCS / f"{name}-{width}.jpg"), type="jpeg", quality=55, full_page=False)
    assert walked == 2 * len(_pages(world))
    assert not problems, "\n".join(problems)
