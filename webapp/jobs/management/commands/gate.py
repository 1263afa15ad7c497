from __future__ import annotations

from pathlib import Path

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from webapp.jobs import gate
from webapp.registry import services
from webapp.registry.models import AdapterVersion, BaseModel


class Command(BaseCommand):
    help = ("Measure a registered version with the promotion gate: it writes held-out briefs (the test half) "
            "against the version it would replace, the writers' filter off and on, and stores the comparison.")

    def add_arguments(self, parser) -> None:
        parser.add_argument("version", help="an adapter as role@version (writer@3), or a base model's name")
        parser.add_argument("--briefs", type=Path, default=gate.BRIEFS, help="the briefs file (its test half is used)")
        parser.add_argument("--count", type=int, default=settings.SCRIPTORIUM_GATE_BRIEFS,
                            help="how many of its test-half briefs")
        parser.add_argument("--max-words", type=int, default=settings.SCRIPTORIUM_GATE_WORDS,
                            help="each brief's length, at most")
        parser.add_argument("--promote", action="store_true", help="activate it if, and only if, it passes")

    def handle(self, *args, version: str, briefs: Path, count: int, max_words: int, promote: bool,
               **options) -> None:
        candidate = _version(version)
        try:
            record = gate.measure(candidate, briefs, count, max_words)
        except gate.GateError as error:
            raise CommandError(str(error)) from error
        self.stdout.write("| version | defects % (filter off) | defects % (filter on) | S_l (filter on) | words |")
        self.stdout.write("|---|---|---|---|---|")
        for measured in (record["candidate"], record["active"]):
            self.stdout.write(f"| {measured['version']} | {measured['off']['defects']:.2f} | "
                              f"{measured['on']['defects']:.2f} | {measured['on']['S_l']:.1f} | "
                              f"{measured['on']['words']:.0f} |")
        self.stdout.write(f"\n{candidate}: {candidate.gate_summary()} (test-half briefs {record['briefs']['numbers']} "
                          f"of {briefs.name}, at most {max_words} words)")
        if promote:
            try:
                promoted = gate.promote(candidate)
            except services.RegistryError as error:
                raise CommandError(str(error)) from error
            self.stdout.write(f"{candidate} is now active." if promoted else f"{candidate} stays staged.")


def _version(name: str) -> BaseModel | AdapterVersion:
    role, _, number = name.partition("@")
    if number:
        found = AdapterVersion.objects.select_related("base_model").filter(
            role=role, version=int(number) if number.isdigit() else -1).first()
    else:
        found = BaseModel.objects.filter(name=name).first()
    if found is None:
        raise CommandError(f"No registered version {name!r} (an adapter is role@version; a base model, its name).")
    return found
