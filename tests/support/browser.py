"""Debian's Chromium, driven by Playwright (test tools may not download browsers here)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
ARTIFACTS = Path(os.environ.get("ARTIFACTS_DIR", Path(__file__).resolve().parents[2] / "artifacts"))

# Every browser test module sets `pytestmark = BROWSER`.
BROWSER = [pytest.mark.browser,
           pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="Debian's chromium is not installed")]


def shot(page, name: str) -> None:
    """A full-page screenshot in artifacts/."""
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)


def off_the_event_loop(function, *args, **kwargs):
    """Run `function` in another thread and return its result: Playwright's event loop runs in
    the test's thread, and the channel layer's synchronous wrapper (events, shared-document
    updates) refuses to run where an event loop is running."""
    import threading

    result, errors = {}, []

    def run():
        try:
            result["value"] = function(*args, **kwargs)
        except BaseException as error:  # noqa: BLE001  (raised again in the test's thread)
            errors.append(error)

    thread = threading.Thread(target=run)
    thread.start()
    thread.join()
    if errors:
        raise errors[0]
    return result.get("value")
