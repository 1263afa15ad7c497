"""Headers every response carries: a Content-Security-Policy that allows no inline script (so no
template may use one), and HSTS when the site runs behind HTTPS."""

from __future__ import annotations

import re
from pathlib import Path

from tests.support.factories import PASSWORD

TEMPLATES = Path(__file__).resolve().parent.parent / "templates"


def test_pages_carry_a_content_security_policy_without_inline_scripts(client, document, owner):
    client.login(username=owner.username, password=PASSWORD)
    for url in ("/accounts/login/", "/projects/", f"/documents/{document.id}/", f"/documents/{document.id}/outline/"):
        policy = client.get(url)["Content-Security-Policy"]
        assert "script-src 'self'" in policy and "unsafe-inline" not in policy.split("script-src")[1].split(";")[0]
        assert "frame-ancestors 'none'" in policy and "object-src 'none'" in policy


def test_no_template_has_inline_script_or_event_handlers():
    """The policy would block them: a button's confirm is a data-confirm attribute instead."""
    offenders = []
    for path in TEMPLATES.rglob("*.html"):
        text = path.read_text()
        if re.search(r"\son[a-z]+\s*=", text) or re.search(r"<script(?![^>]*\bsrc=)[^>]*>", text):
            offenders.append(str(path.relative_to(TEMPLATES)))
    assert offenders == []


def test_hsts_behind_https(client, settings):
    settings.SECURE_HSTS_SECONDS = 31_536_000
    response = client.get("/accounts/login/", secure=True)
    assert response["Strict-Transport-Security"].startswith("max-age=31536000")


def test_https_setting_turns_on_hsts_and_secure_cookies():
    import subprocess
    import sys

    code = ("import django, os; os.environ['HTTPS'] = '1'; os.environ['DJANGO_SETTINGS_MODULE'] = 'webapp.settings'; "
            "from django.conf import settings; print(settings.SECURE_HSTS_SECONDS, settings.SESSION_COOKIE_SECURE)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=TEMPLATES.parent).stdout.split()
    assert out == ["31536000", "True"]
