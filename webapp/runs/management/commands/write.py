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

from agents.evaluation import length_score
from agents.roles.section_writer import HIGH, LOW
from webapp.celery import app
from webapp.documents import export, sources
from webapp.documents import services as documents
from webapp.documents.models import SourceStatus
from webapp.projects import services as projects
from webapp.projects.models import Project
from webapp.runs import services, suggestions
from webapp.runs.models import FINAL, RunStatus, SuggestionStatus, WritingRun


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
        # Here the person asking is the command line: the finisher's title is taken.
        for suggestion in document.suggestions.filter(kind="title", status=SuggestionStatus.OPEN):
            suggestions.suggestion_accept(suggestion=suggestion, user=user)
        document.refresh_from_db()
        self._summary(run)
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
        uploaded = [sources.source_upload(project=project, user=user,
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
                bar = bars.get(task.pk)
                if bar is None:
                    name = task.section.heading if task.section else task.role
                    bar = bars[task.pk] = tqdm(total=task.section.word_budget if task.section else 1, desc=name[:30],
                                               unit="word" if task.section else "step", file=self.stderr._out,
                                               leave=True)
                if task.section is None:
                    written = int(task.status == "done")
                else:
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


    def _summary(self, run: WritingRun) -> None:
        """Each section's words against its budget, and the article's length score, on stderr."""
        out = self.stderr
        within = 0
        leaves = [t for t in run.tasks.select_related("section") if t.section and t.status == "done"]
        for task in leaves:
            budget, words = task.section.word_budget, task.section.word_count()
            ok = LOW * budget <= words <= HIGH * budget
            within += ok
            out.write(f"  {task.section.heading[:50]:<50} {words:>5} / {budget:<5} {'ok' if ok else 'OUTSIDE 15%'}")
        words, target = run.document.word_count(), run.document.target_words
        out.write(f"{within} of {len(leaves)} sections within 15% of their budget; article {words} words for "
                  f"{target} (S_l {length_score(words, target):.1f}); {run.status} in "
                  f"{(run.finished_at - run.created_at).total_seconds():.0f} s" if run.finished_at else "")


def _json_record(run: WritingRun) -> str:
    record = {
        "run": run.pk, "status": run.status, "outline_path": run.outline_path, "problems": run.outline_problems,
        "error": run.error, "document": run.document_id, "title": run.document.title, "lead": run.document.lead,
        "target_words": run.document.target_words, "words": run.document.word_count(),
        "seconds": (run.finished_at - run.created_at).total_seconds() if run.finished_at else None,
        "tasks": [{"role": t.role, "section": t.section.heading if t.section else None, "status": t.status,
                   "words": t.words, "tokens": t.tokens,
                   "budget": t.section.word_budget if t.section else None, "attempts": t.attempts,
                   "context_bytes": t.context_bytes, "adapter": t.adapter_version}
                  for t in run.tasks.select_related("section")],
    }
    return json.dumps(record, indent=2)
