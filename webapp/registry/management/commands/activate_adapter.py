from __future__ import annotations

from django.core.management.base import BaseCommand, CommandError

from webapp.registry import services
from webapp.registry.models import AdapterVersion


class Command(BaseCommand):
    help = "Choose the adapter version a role uses: a version number, --rollback, or --none for the base model."

    def add_arguments(self, parser) -> None:
        parser.add_argument("role")
        parser.add_argument("version", nargs="?", type=int)
        parser.add_argument("--rollback", action="store_true", help="go back to the previously active version")
        parser.add_argument("--none", action="store_true", help="use the plain base model for this role")
        services.override_arguments(parser)

    def handle(self, *args, role: str, version: int | None, rollback: bool, none: bool, **options) -> None:
        if sum([version is not None, rollback, none]) != 1:
            raise CommandError("Give a version, or --rollback, or --none.")
        try:
            if none:
                services.adapter_deactivate(role=role)
                self.stdout.write(f"{role} now uses the base model.")
                return
            if rollback:
                adapter = services.adapter_rollback(role=role)
            else:
                adapter = AdapterVersion.objects.filter(role=role, version=version).first()
                if adapter is None:
                    raise CommandError(f"No version {version} of {role!r}.")
                services.adapter_activate(adapter=adapter, override=services.override_from(options))
        except services.RegistryError as error:
            raise CommandError(str(error)) from error
        self.stdout.write(f"{role} now uses {adapter.name}; the next request picks it up.")
