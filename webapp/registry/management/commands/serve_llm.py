"""Serve this machine's engine over an OpenAI-compatible HTTP API (see agents/llm/server.py)."""

from __future__ import annotations

from django.core.management.base import BaseCommand

from agents.llm.server import OpenAICompatibleApp
from agents.llm.types import AdapterSpec
from webapp import llm
from webapp.registry import services
from webapp.registry.models import AdapterVersion


def resolve(name: str) -> AdapterSpec | None:
    """"writer" is the version the role uses now; "writer@3" is version 3."""
    role, _, version = name.partition("@")
    if not version:
        spec = services.resolve_adapter(role)
        if spec is None:
            raise LookupError(f"no active adapter for {role!r}")
        return spec
    adapter = AdapterVersion.objects.select_related("base_model").get(role=role, version=int(version))
    return AdapterSpec(adapter.name, adapter.path, adapter.sha256, adapter.base_model.name)


def list_adapters() -> list[str]:
    return [a.name for a in AdapterVersion.objects.order_by("role", "version")]


class Command(BaseCommand):
    help = "Serve the LLM engine as an OpenAI-compatible API: /v1/chat/completions and /v1/models."

    def add_arguments(self, parser) -> None:
        parser.add_argument("--host", default="127.0.0.1")
        parser.add_argument("--port", type=int, default=8001)

    def handle(self, *args, host: str, port: int, **options) -> None:
        import uvicorn

        name, _ = llm.model_folder()
        app = OpenAICompatibleApp(llm.get_engine(), name, resolve, list_adapters)
        self.stdout.write(f"Serving {name} at http://{host}:{port}/v1 (model ids: {name}, {name}:<role>[@version])")
        uvicorn.run(app, host=host, port=port, lifespan="off", log_level="info")
