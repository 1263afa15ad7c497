"""Role adapters on model servers that load them at run time (vLLM with --enable-lora, or
serve_llm): when a version is activated, rolled back or deactivated, every server in
SCRIPTORIUM_LORA_SERVERS unloads the name and loads the new version (POST
/v1/unload_lora_adapter, then /v1/load_lora_adapter naming the folder where that server finds it
by checksum: a name loaded before from other files is never taken for it) and unloads the one it
replaces, so that requests for the
role, which name the adapter as their model, find it loaded. A server that refuses fails the
change, which is then not made."""

from __future__ import annotations

import httpx
from django.conf import settings

from webapp.registry.models import AdapterVersion

TIMEOUT_S = 60.0  # a large adapter is read from disk and moved to the GPU before the answer


class LoraServerError(Exception):
    """A server that did not load or unload an adapter; the message names it and says why."""


def lora_path(adapter: AdapterVersion) -> str:
    """Where a server finds the adapter's files: its adapter folder, one subfolder per checksum."""
    return f"{settings.SCRIPTORIUM_LORA_SERVER_DIR.rstrip('/')}/{adapter.sha256}"


def switch(*, load: AdapterVersion | None, unload: AdapterVersion | None) -> None:
    """Load `load` on every server, and only then unload `unload` (the version it replaces)
    from every server: a server that refuses the new version leaves the old one served everywhere."""
    if load is not None:
        for server in settings.SCRIPTORIUM_LORA_SERVERS:
            # Unloaded first: a server that had this name loaded, maybe from other files, then
            # serves exactly the registered version (its "already loaded" proves nothing).
            _post(server, "unload_lora_adapter", {"lora_name": load.name}, done_already="cannot be found")
            _post(server, "load_lora_adapter", {"lora_name": load.name, "lora_path": lora_path(load)})
    if unload is not None and (load is None or unload.pk != load.pk):
        for server in settings.SCRIPTORIUM_LORA_SERVERS:
            _post(server, "unload_lora_adapter", {"lora_name": unload.name}, done_already="cannot be found")


def sync(adapters: list[AdapterVersion]) -> None:
    """Load these (the active versions) on every server, as after a server restarts."""
    for adapter in adapters:
        switch(load=adapter, unload=None)


def _post(server: str, endpoint: str, payload: dict, done_already: str = "") -> None:
    headers = {"Authorization": f"Bearer {settings.OPENAI_API_KEY}"} if settings.OPENAI_API_KEY else {}
    url = f"{server.rstrip('/')}/{endpoint}"
    try:
        response = httpx.post(url, json=payload, headers=headers, timeout=TIMEOUT_S)
    except httpx.HTTPError as error:
        raise LoraServerError(f"{url}: {type(error).__name__}: {error}") from error
    if response.status_code == 200 or (done_already and done_already in response.text):
        return
    try:  # vLLM: {"message": ...}; OpenAI's shape (serve_llm): {"error": {"message": ...}}
        data = response.json()
        message = data.get("message") or data.get("error", {}).get("message") or response.text
    except (ValueError, AttributeError):
        message = response.text
    raise LoraServerError(f"{url} answered {response.status_code}: {message[:500]}")
