from __future__ import annotations

import json

from django.core.management.base import BaseCommand, CommandError

from webapp.registry import services
from webapp.registry.models import BaseModel


class Command(BaseCommand):
    help = "Register a LoRA adapter folder as the next version of a role's adapter."

    def add_arguments(self, parser) -> None:
        parser.add_argument("role", help="the agent role, e.g. writer")
        parser.add_argument("path", help="the adapter folder (adapter_config.json, adapter_model.safetensors)")
        parser.add_argument("--base", required=True, help="name of the registered base model it was trained on")
        parser.add_argument("--metrics", default="{}", help='JSON, e.g. \'{"eval_loss": 2.1}\'')
        parser.add_argument("--activate", action="store_true", help="make it the version the role uses")
        services.override_arguments(parser)

    def handle(self, *args, role: str, path: str, base: str, metrics: str, activate: bool, **options) -> None:
        base_model = BaseModel.objects.filter(name=base).first()
        if base_model is None:
            raise CommandError(f"No base model named {base!r}; register it first with register_model.")
        try:
            adapter = services.adapter_register(role=role, path=path, base_model=base_model,
                                                metrics=json.loads(metrics), activate=activate,
                                                override=services.override_from(options))
        except (services.RegistryError, ValueError) as error:
            raise CommandError(str(error)) from error
        self.stdout.write(f"{adapter.name}: {adapter.path} sha256 {adapter.sha256[:12]}… ({adapter.status})")
