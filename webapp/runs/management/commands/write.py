"""Write an article from the command line, through the real queue and workers (`make run`)."""

from __future__ import annotations

import json
import time
from pathlib import Path

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.files.uploadedfile import SimpleUploadedFile
from django.core.management.base import BaseCommand, CommandError
from tqdm import tqdm

from webapp.celery import app
from webapp.documents import export
from webapp.documents import services as documents
from webapp.documents.models import SourceStatus
from webapp.projects import services as projects
from webapp.projects.models import Project
from webapp.runs import services
from webapp.runs.models import RunStatus, WritingRun

FINAL = (RunStatus.DONE, RunStatus.FAILED, RunStatus.CANCELLED)


class Command(BaseCommand):
    help = "Plan and write an article with the agents, showing progress, then print it."

    def add_arguments(self, parser) -> None:
        parser.add_argument("topic")
        parser.add_argument("--words", type=int, default=1500)
        parser.add_argument("--sources", type=Path, help="a folder of .txt/.md/.pdf/.html files to draw on")
        parser.add_argument("--audience", default="")
        parser.add_argument("--json", action="store_true", help="print the run record as JSON instead")
        parser.add_argument("--timeout", type=int, default=3600, help="seconds to wait for the run")

    def handle(self, *args, topic: str, words: int, sources: Path | None, audience: str, json: bool,
               timeout: int, **options) -> None:
        if not 100 <= words <= 50_000:
            raise CommandError("--words must be between 100 and 50,000.")
        if not app.control.inspect(timeout=2).active_queues():
            raise CommandError("No Celery worker answers. Start them with `make run` (or see the README).")
        user, _ = get_user_model().objects.get_or_create(username="headless", defaults={"is_active": False})
        project = Project.objects.filter(memberships__user=user, name="Headless runs").first() or \
            projects.project_create(user=user, name="Headless runs")
        if sources:
            self._upload(project, user, sources)
        document = documents.document_create(project=project, user=user, title=topic[:300], topic=topic,
                                             audience=audience, target_words=words, auto_approve_outline=True)
        run = services.run_start(document=document, user=user)
        run = self._follow(run, timeout)
        if json:
            self.stdout.write(_json_record(run))
        else:
            self.stdout.write(export.document_markdown(document))
        if run.status != RunStatus.DONE:
            raise CommandError(f"The run ended {run.status}: {run.error}")

    def _upload(self, project, user, folder: Path) -> None:
        files = [p for p in sorted(folder.iterdir()) if p.suffix.lower() in settings.SOURCE_EXTENSIONS]
        if not files:
            raise CommandError(f"{folder}: no .txt, .md, .pdf or .html files")
        uploaded = [documents.source_upload(project=project, user=user,
                                            upload=SimpleUploadedFile(p.name, p.read_bytes())) for p in files]
        deadline = time.monotonic() + 300
        for source in uploaded:
            while source.status in (SourceStatus.PENDING, SourceStatus.PROCESSING) and time.monotonic() < deadline:
                time.sleep(0.5)
                source.refresh_from_db()
            self.stderr.write(f"source {source.original_name}: {source.status} {source.error}")

    def _follow(self, run: WritingRun, timeout: int) -> WritingRun:
        deadline = time.monotonic() + timeout
        bars: dict[int, tqdm] = {}
        while time.monotonic() < deadline:
            run.refresh_from_db()
            for task in run.tasks.select_related("section"):
                if task.section is None:
                    continue
                bar = bars.get(task.pk)
                if bar is None:
                    bar = bars[task.pk] = tqdm(total=task.section.word_budget, desc=task.section.heading[:30],
                                               unit="word", file=self.stderr._out, leave=True)
                written = len((task.checkpoint_text or "").split())
                bar.set_postfix_str(task.status)
                bar.update(max(0, min(written, bar.total) - bar.n))
            if run.status in FINAL:
                break
            time.sleep(0.5)
        for bar in bars.values():
            bar.close()
        if run.status not in FINAL:
            services.run_cancel(run=run)
            raise CommandError(f"The run did not finish in {timeout} s; it was cancelled.")
        return run


def _json_record(run: WritingRun) -> str:
    record = {
        "run": run.pk, "status": run.status, "outline_path": run.outline_path, "problems": run.outline_problems,
        "error": run.error, "document": run.document_id, "target_words": run.document.target_words,
        "words": run.document.word_count(),
        "tasks": [{"section": t.section.heading if t.section else None, "status": t.status, "words": t.words,
                   "budget": t.section.word_budget if t.section else None, "attempts": t.attempts,
                   "context_bytes": t.context_bytes, "adapter": t.adapter_version}
                  for t in run.tasks.select_related("section")],
    }
    return json.dumps(record, indent=2)
