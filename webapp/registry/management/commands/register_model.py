from __future__ import annotations

from django.core.management.base import BaseCommand, CommandError

from webapp.registry import services


class Command(BaseCommand):
    help = "Register a local Hugging Face model folder as a base model (and optionally serve it)."

    def add_arguments(self, parser) -> None:
        parser.add_argument("name", help="a short name, e.g. smollm2-135m-instruct")
        parser.add_argument("path", help="the model folder (config.json, weights, tokenizer)")
        parser.add_argument("--activate", action="store_true", help="make it the model workers serve")
        parser.add_argument("--notes", default="")
        services.override_arguments(parser)

    def handle(self, *args, name: str, path: str, activate: bool, notes: str, **options) -> None:
        try:
            model = services.base_model_register(name=name, path=path, activate=activate, notes=notes,
                                                 override=services.override_from(options))
        except services.RegistryError as error:
            raise CommandError(str(error)) from error
        self.stdout.write(f"{model.name}: {model.path} sha256 {model.sha256[:12]}… ({model.status})")
