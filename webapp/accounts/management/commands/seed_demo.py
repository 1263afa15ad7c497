"""Create the demo account and project on first run, and print the login every run."""

from __future__ import annotations

import secrets

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand
from django.db import transaction

from webapp.documents import services as documents
from webapp.projects import services as projects

DEMO_OUTLINE = [
    ("Before the press", "Show how books were made and copied before 1450.", 350),
    ("Gutenberg's workshop", "Explain movable type, the press and the ink.", 450),
    ("How print changed Europe", "Literacy, the Reformation and science.", 500),
    ("Legacy", "What the press teaches about today's media shifts.", 200),
]


class Command(BaseCommand):
    help = "Create the demo user and project if they do not exist, and print the login."

    def handle(self, *args, **options) -> None:
        login_file = settings.DATA_DIR / "demo-login.txt"
        User = get_user_model()
        if not User.objects.filter(username="demo").exists():
            password = secrets.token_urlsafe(9)
            with transaction.atomic():
                user = User.objects.create_superuser("demo", "demo@example.com", password)
                project = projects.project_create(user=user, name="Demo project",
                                                  description="A place to try Scriptorium.")
                document = documents.document_create(
                    project=project, user=user, title="The printing press",
                    topic="How the printing press changed how knowledge spreads",
                    audience="Curious general readers", tone="Clear and lively", target_words=1500,
                )
                for heading, goal, budget in DEMO_OUTLINE:
                    documents.section_add(document=document, user=user, heading=heading, goal=goal,
                                          word_budget=budget)
            login_file.write_text(password)
            login_file.chmod(0o600)
            self.stdout.write("Created the demo account and project.")
        if login_file.exists():
            self.stdout.write(self.style.SUCCESS(
                f"Log in as demo / {login_file.read_text().strip()} (also an admin of /admin/)"))
        else:
            self.stdout.write("The demo account exists; reset its password with "
                              "`python manage.py changepassword demo`.")
