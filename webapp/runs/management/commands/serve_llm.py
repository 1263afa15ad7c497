"""Serve this machine's engine over an OpenAI-compatible HTTP API (see agents/llm/server.py)."""

from __future__ import annotations

import ipaddress
import os
import re
from pathlib import Path

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from agents.llm.files import ModelFolderError, check_adapter_folder, check_adapter_weights
from agents.llm.server import OpenAICompatibleApp
from agents.llm.types import AdapterSpec
from webapp import llm
from webapp.registry import services, store
from webapp.registry.models import AdapterVersion

SHUTDOWN_S = 5  # what is still open after a SIGTERM is closed after this long


def resolve(name: str) -> AdapterSpec | None:
    """"writer" is the version the role uses now; "writer@3" is version 3."""
    role, _, version = name.partition("@")
    if not version:
        spec = services.resolve_adapter(role)
        if spec is None:
            raise LookupError(f"no active adapter for {role!r}")
        return spec
    adapter = AdapterVersion.objects.select_related("base_model").get(role=role, version=int(version))
    return services.adapter_spec(adapter)


SHA256 = re.compile(r"[0-9a-f]{64}")


def load(name: str, path: str) -> AdapterSpec:
    """An adapter loaded at run time (POST /v1/load_lora_adapter). Only from this server's
    adapter folder, SCRIPTORIUM_LORA_SERVER_DIR/<sha256>: a folder named by a registered
    version's checksum that is not here yet is fetched from the models storage into it, as
    `fetch_adapters` does beside a vLLM server; what is there must have that checksum, hold no
    link out of it, and fit the base model this server serves. Anything else is refused
    (ModelFolderError: the server answers 400 with the reason), and nothing is written
    outside the folder."""
    root = Path(settings.SCRIPTORIUM_LORA_SERVER_DIR).resolve()
    given = Path(path)
    if not SHA256.fullmatch(given.name) or given.parent.resolve() != root:
        raise ModelFolderError(f"{path}: this server loads adapters from {root}/<sha256> only")
    folder = root / given.name
    if folder.is_symlink():
        raise ModelFolderError(f"{folder}: a link, not an adapter folder")
    if not folder.is_dir():
        version = AdapterVersion.objects.filter(sha256=folder.name).exclude(stored="").first()
        if version is None:
            raise ModelFolderError(f"{folder}: no such adapter folder, and no registered version has that checksum")
        folder = store.local_folder(version.sha256, version.stored, cache=root)
    for file in folder.rglob("*"):
        if file.is_symlink() or not file.resolve().is_relative_to(folder.resolve()):
            raise ModelFolderError(f"{folder}: {file.name} is a link; an adapter folder holds its own files")
    check_adapter_folder(folder, sha256=folder.name)  # what is there is what was registered
    base_name, base_folder = llm.model_folder()
    check_adapter_weights(folder, base_folder)  # an adapter for another model: refused, not served
    return AdapterSpec(name, str(folder), folder.name, base_model=base_name)


def list_adapters() -> list[str]:
    return [a.name for a in AdapterVersion.objects.order_by("role", "version")]


class Command(BaseCommand):
    help = "Serve the LLM engine as an OpenAI-compatible API: /v1/chat/completions and /v1/models."

    def add_arguments(self, parser) -> None:
        parser.add_argument("--host", default="127.0.0.1")
        parser.add_argument("--port", type=int, default=8001)
        parser.add_argument("--api-key", default=os.environ.get("SCRIPTORIUM_LLM_API_KEY", ""),
                            help="bearer token clients must send (default: $SCRIPTORIUM_LLM_API_KEY); "
                                 "required when listening beyond loopback")

    def handle(self, *args, host: str, port: int, api_key: str, **options) -> None:
        import uvicorn

        if settings.SCRIPTORIUM_LLM_BACKEND != "transformers":
            raise CommandError("serve_llm serves a local model: unset SCRIPTORIUM_LLM_BACKEND=openai")
        if not api_key and not _loopback(host):
            raise CommandError(f"listening on {host} needs --api-key (or SCRIPTORIUM_LLM_API_KEY)")
        name, _ = llm.model_folder()
        core = llm.get_engine().core
        app = OpenAICompatibleApp(core, name, resolve, list_adapters, api_key=api_key, load_adapter=load)
        self.stdout.write(f"Serving {name} at http://{host}:{port}/v1 (model ids: {name}, {name}:<role>[@version])")

        class Server(uvicorn.Server):
            def handle_exit(self, sig, frame) -> None:
                # SIGTERM or Ctrl-C: what runs or waits ends "cancelled" at the next step, so the
                # requests waiting on it answer and the server stops within seconds.
                core.close(timeout=0)
                super().handle_exit(sig, frame)

        Server(uvicorn.Config(app, host=host, port=port, lifespan="off", log_level="info",
                              timeout_graceful_shutdown=SHUTDOWN_S)).run()
        core.close()


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
