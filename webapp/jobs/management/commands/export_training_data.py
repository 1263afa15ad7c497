"""Export training pairs for one role: JSONL files that the recipes in training/ read."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

from django.core.management.base import BaseCommand, CommandError

from webapp.jobs import training_data
from webapp.projects.models import Project


def _date(value: str) -> dt.date:
    try:
        return dt.date.fromisoformat(value)
    except ValueError:
        raise CommandError(f"{value!r} is not a date (use YYYY-MM-DD)") from None


class Command(BaseCommand):
    help = ("Write (prompt, accepted text) pairs for a role as train.jsonl and heldout.jsonl, each pair "
            "labelled accepted, rewritten or rejected.")

    def add_arguments(self, parser) -> None:
        parser.add_argument("--role", required=True, choices=training_data.ROLES)
        parser.add_argument("--out", type=Path, required=True, help="the folder to write (created if missing)")
        parser.add_argument("--project", help="a project id or name (default: every project)")
        parser.add_argument("--since", type=_date, help="tasks finished on or after this date (YYYY-MM-DD)")
        parser.add_argument("--until", type=_date, help="tasks finished on or before this date")
        parser.add_argument("--heldout", type=float, default=0.1, help="share of documents held out (0.1)")
        parser.add_argument("--seed", type=int, default=0, help="changes which documents are held out")

    def handle(self, *args, role: str, out: Path, project: str | None, since, until, heldout: float, seed: int,
               **options) -> None:
        project_id = None
        if project is not None:
            found = Project.objects.filter(pk=int(project)) if project.isdigit() else Project.objects.filter(
                name=project)
            if found.count() != 1:
                raise CommandError(f"no single project is called {project!r}")
            project_id = found.get().pk
        if since and until and since > until:
            raise CommandError("--since is after --until")
        try:
            records = training_data.pairs(role=role, project_id=project_id, since=since, until=until)
            export = training_data.split(records, heldout, seed)
        except training_data.ExportError as error:
            raise CommandError(str(error)) from error
        filters = {"project": project_id, "since": since and since.isoformat(), "until": until and until.isoformat(),
                   "heldout": heldout, "seed": seed}
        manifest = training_data.write(export, out, role=role, filters=filters)
        labels = ", ".join(f"{count} {label}" for label, count in sorted(manifest["labels"].items())) or "none"
        self.stdout.write(f"{out}: {manifest['train']} training and {manifest['heldout']} held-out pairs ({labels})")
        if not records:
            self.stderr.write("No finished tasks matched: the files are empty.")
