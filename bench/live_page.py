"""What keeping the document page live costs the server: the time and bytes of each thing a page
asks for, on a long document (30 sections of 300 words, 10 open suggestions, a run of 30 tasks).

A page loads the whole document once; then each event makes it re-read only the regions the
event names (`run.progress`, once a second per writing batch: the Agents panel alone). Printed,
side by side in one run: milliseconds per request (median of 20) and bytes, and each as a ratio
to the full page.

    .venv/bin/python bench/live_page.py      # a throwaway SQLite database; a few seconds
"""

from __future__ import annotations

import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ["DATABASE_URL"] = f"sqlite:///{tempfile.mkdtemp()}/bench.sqlite3"
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "webapp.settings")

SECTIONS, WORDS, SUGGESTIONS, REPEAT = 30, 300, 10, 20


def _document():
    from django.core.management import call_command

    from tests.support.factories import make_project, make_user
    from webapp.documents import services as documents
    from webapp.runs.models import AgentTask, RunStatus, Suggestion, WritingRun

    call_command("migrate", verbosity=0)
    owner = make_user("bench")
    project = make_project(owner, name="Bench")
    document = documents.document_create(project=project, user=owner, title="A long article", topic="Tides",
                                         target_words=SECTIONS * WORDS)
    sentence = "The moon pulls the water of the oceans toward it, and the earth turns beneath the bulge. "
    run = WritingRun.objects.create(document=document, created_by=owner, status=RunStatus.WRITING)
    for index in range(SECTIONS):
        section = documents.section_add(document=document, user=owner, heading=f"Section {index + 1}",
                                        word_budget=WORDS)
        text = (sentence * (WORDS // 17 + 1)).strip()
        documents.section_save_text(section_id=section.id, user=owner, text=text, expected_version=section.version)
        AgentTask.objects.create(run=run, role="writer", section=section, status="running", attempts=1,
                                 words=WORDS // 2, tokens=WORDS)
        if index < SUGGESTIONS:
            Suggestion.objects.create(document=document, section=section, run=run, role="reviewer",
                                      kind="repetition", original=sentence.strip(), reason="Repeats itself.")
    return owner, document


def main() -> None:
    from webapp.launcher import start_embedded_redis

    env = dict(os.environ)
    redis = None if env.get("REDIS_URL") else start_embedded_redis(env)
    os.environ.update(env)  # before Django reads its settings
    import django

    django.setup()
    from django.test import Client
    from django.test.utils import setup_test_environment

    setup_test_environment()
    try:
        owner, document = _document()
        client = Client()
        client.force_login(owner)
        base = f"/documents/{document.id}/"
        urls = {"full page (first load)": base, "all live regions": base + "live/",
                "Agents panel (run.progress)": base + "live/?part=runs",
                "head + body (section.text)": base + "live/?part=head&part=body", "/state/ JSON": base + "state/"}
        rows = []
        for name, url in urls.items():
            client.get(url)  # warm
            times = []
            for _ in range(REPEAT):
                start = time.perf_counter()
                response = client.get(url)
                times.append(time.perf_counter() - start)
                assert response.status_code == 200, (url, response.status_code)
            rows.append((name, statistics.median(times) * 1000, len(response.content)))
        full_ms, full_bytes = rows[0][1], rows[0][2]
        print(f"{SECTIONS} sections x {WORDS} words, {SUGGESTIONS} suggestions, {SECTIONS} tasks; "
              f"median of {REPEAT}, one process, SQLite")
        print(f"{'request':32} {'ms':>8} {'x page':>7} {'bytes':>9} {'x page':>7}")
        for name, ms, size in rows:
            print(f"{name:32} {ms:8.1f} {ms / full_ms:7.2f} {size:9d} {size / full_bytes:7.2f}")
    finally:
        if redis is not None:
            redis.terminate()


if __name__ == "__main__":
    main()
