"""An OpenAI-compatible HTTP server over our serving core, so one GPU machine can serve many CPU
workers: POST /v1/chat/completions (streaming or not), GET /v1/models and GET /metrics.

`model` names the base model, or `base:adapter` for a LoRA adapter ("writer" for the version the
role uses now, "writer@3" for a given version), or an adapter loaded at run time by name, as
vLLM does it: POST /v1/load_lora_adapter {"lora_name", "lora_path"} and /v1/unload_lora_adapter
{"lora_name"} (the registry calls them when a version is activated or rolled back). Every
request joins the core's running batch at the next step (continuous batching), grouped per
client (`user`, else the address) so clients share rows fairly. Besides OpenAI's fields it
accepts what vLLM accepts for our roles: `repetition_penalty`, `min_tokens`, and
`continue_final_message` (the last message is the assistant's answer so far, to be continued).
A plain ASGI app: `manage.py serve_llm` runs it.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import math
import time
import uuid
from collections.abc import Callable

from agents.llm import guided
from agents.llm.metrics import prometheus_text
from agents.llm.serving import ServingCore
from agents.llm.types import BULK, INTERACTIVE, AdapterSpec, Delta, GenerationRequest

log = logging.getLogger(__name__)

AdapterResolver = Callable[[str], AdapterSpec | None]
AdapterLoader = Callable[[str, str], AdapterSpec]  # (name, path on this machine) -> a checked adapter


class BadRequest(Exception):
    pass


def _number(data: dict, name: str, default: float, low: float, high: float = math.inf) -> float:
    value = data.get(name, default)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value) \
            or not low <= value <= high:
        raise BadRequest(f"{name} must be a number from {low:g} to {high:g}")
    return float(value)


def _json_object(body: bytes) -> dict:
    try:
        data = json.loads(body or b"{}")
    except ValueError as error:
        raise BadRequest(f"the body is not JSON ({error})") from None
    if not isinstance(data, dict):
        raise BadRequest("the body must be a JSON object")
    return data


def _messages(data: dict) -> tuple[list[dict[str, str]], str]:
    """The chat messages, and the assistant's text to go on from (continue_final_message)."""
    messages = data.get("messages")
    if not isinstance(messages, list) or not messages or not all(
            isinstance(m, dict) and isinstance(m.get("content"), str)
            and isinstance(m.get("role", "user"), str) for m in messages):
        raise BadRequest("messages must be a non-empty list of {role, content} objects with text content")
    messages = [{"role": m.get("role", "user"), "content": m["content"]} for m in messages]
    prefix = ""
    if data.get("continue_final_message"):
        if messages[-1]["role"] != "assistant":
            raise BadRequest("continue_final_message needs the last message to be the assistant's")
        prefix = messages.pop()["content"]
        if not messages:
            raise BadRequest("continue_final_message needs a message before the assistant's")
    return messages, prefix


def _options(data: dict) -> tuple[tuple[str, ...], str, str | None]:
    """The stop strings, the priority and the user a body names."""
    stop = data.get("stop") or ()
    stop = (stop,) if isinstance(stop, str) else stop
    if not isinstance(stop, list | tuple) or not all(isinstance(s, str) and s for s in stop) or len(stop) > 16:
        raise BadRequest("stop must be a string or a list of up to 16 non-empty strings")
    priority = data.get("priority", "bulk")
    if priority not in ("bulk", "interactive"):
        raise BadRequest('priority must be "bulk" or "interactive"')
    user = data.get("user")
    if user is not None and not isinstance(user, str):
        raise BadRequest("user must be a string")
    return tuple(stop), priority, user


def _whole(data: dict, names: tuple[str, ...], default: int, low: int, high: int) -> int:
    for name in names:
        value = data.get(name)
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
            raise BadRequest(f"{name} must be a whole number from {low} to {high}")
        return value
    return default


class OpenAICompatibleApp:
    def __init__(self, core: ServingCore, base_model: str, resolve_adapter: AdapterResolver,
                 list_adapters: Callable[[], list[str]] = list, api_key: str = "",
                 load_adapter: AdapterLoader | None = None):
        self.core = core
        self.base_model = base_model
        self.resolve_adapter = resolve_adapter
        self.list_adapters = list_adapters
        self.api_key = api_key
        self.load_adapter = load_adapter
        self.loaded: dict[str, AdapterSpec] = {}  # adapters loaded at run time, by the name requests use

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":  # run with lifespan="off": nothing to set up per server
            return
        path, method = scope["path"].rstrip("/"), scope["method"]
        if self.api_key and not self._authorised(scope):
            await _json(send, 401, _error("a valid API key is required (Authorization: Bearer ...)",
                                          "invalid_request_error"))
            return
        try:
            # The resolvers may query a database: keep them off the event loop.
            if path == "/v1/models" and method == "GET":
                await _json(send, 200, await asyncio.to_thread(self._models))
            elif path == "/metrics" and method == "GET":
                body = prometheus_text(self.core.metrics(), {"model": self.base_model,
                                                             "device": self.core.device_name}).encode()
                await send({"type": "http.response.start", "status": 200, "headers": [
                    (b"content-type", b"text/plain; version=0.0.4"), (b"content-length", str(len(body)).encode())]})
                await send({"type": "http.response.body", "body": body})
            elif path in ("/v1/load_lora_adapter", "/v1/unload_lora_adapter") and method == "POST":
                load = path == "/v1/load_lora_adapter"
                status, message = await asyncio.to_thread(self._lora, await _body(receive), load)
                if status == 200:
                    await _text(send, status, message)
                else:
                    kind = "not_found" if status == 404 else "invalid_request_error"
                    await _json(send, status, _error(message, kind))
            elif path == "/v1/chat/completions" and method == "POST":
                client = (scope.get("client") or ("local", 0))[0]
                await self._chat(await _body(receive), send, receive, client)
            else:
                await _json(send, 404, _error(f"no route for {method} {path}", "not_found"))
        except BadRequest as error:
            await _json(send, 400, _error(str(error), "invalid_request_error"))

    def _models(self) -> dict:
        names = [self.base_model] + [f"{self.base_model}:{a}" for a in self.list_adapters()]
        data = [{"id": n, "object": "model", "owned_by": "scriptorium"} for n in names]
        data += [{"id": name, "object": "model", "owned_by": "scriptorium", "root": spec.path,
                  "parent": self.base_model} for name, spec in sorted(self.loaded.items())]
        return {"object": "list", "data": data}

    def _lora(self, body: bytes, load: bool) -> tuple[int, str]:
        """vLLM's dynamic LoRA endpoints, with its answers: loading a name twice or unloading one
        that is not loaded is an error; a folder that is not a usable adapter is refused."""
        if self.load_adapter is None:
            return 404, "this server does not load adapters at run time"
        try:
            data = json.loads(body or b"{}")
        except ValueError:
            data = None
        name = data.get("lora_name") if isinstance(data, dict) else None
        if not isinstance(name, str) or not name or name == self.base_model or ":" in name:
            return 400, "lora_name must be a non-empty name other than the base model's, without ':'"
        if not load:
            if self.loaded.pop(name, None) is None:
                return 404, f"The lora adapter '{name}' cannot be found."
            return 200, f"Success: LoRA adapter '{name}' removed successfully."
        if name in self.loaded:
            return 400, f"The lora adapter '{name}' has already been loaded."
        folder = data.get("lora_path")
        if not isinstance(folder, str) or not folder:
            return 400, "lora_path must name the adapter's folder"
        try:
            self.loaded[name] = self.load_adapter(name, folder)
        except Exception as error:  # noqa: BLE001  (the loader's reason, for the caller to show)
            return 400, f"could not load {name!r}: {error}"
        return 200, f"Success: LoRA adapter '{name}' added successfully."

    def _authorised(self, scope) -> bool:
        headers = dict(scope.get("headers") or [])
        given = headers.get(b"authorization", b"").decode("latin-1")
        return hmac.compare_digest(given.encode(), f"Bearer {self.api_key}".encode())

    def _request(self, body: bytes, client: str) -> tuple[GenerationRequest, str, bool]:
        """The request a chat-completions body asks for, its model name and whether it streams;
        BadRequest says what is wrong with a body."""
        data = _json_object(body)
        model = data.get("model") or self.base_model
        if not isinstance(model, str):
            raise BadRequest("model must be a string")
        messages, prefix = _messages(data)
        stop, priority, user = _options(data)
        max_tokens = _whole(data, ("max_completion_tokens", "max_tokens"), 256, 1, self.core.max_positions)
        response_format = data.get("response_format")
        if response_format is not None:
            try:
                guided.grammar_for(response_format)
            except guided.GuideError as error:
                raise BadRequest(str(error)) from None
        stream = data.get("stream", False)
        if not isinstance(stream, bool):
            raise BadRequest("stream must be true or false")
        request = GenerationRequest(
            id=f"chatcmpl-{uuid.uuid4().hex[:20]}", messages=messages, assistant_prefix=prefix,
            max_new_tokens=max_tokens, temperature=_number(data, "temperature", 0.0, 0.0, 2.0),
            top_p=_number(data, "top_p", 1.0, 1e-9, 1.0), seed=_whole(data, ("seed",), 0, -2**63, 2**63 - 1),
            stop=stop, repetition_penalty=_number(data, "repetition_penalty", 1.0, 1e-3, 10.0),
            min_new_tokens=_whole(data, ("min_tokens",), 0, 0, max_tokens),
            priority=INTERACTIVE if priority == "interactive" else BULK, group=f"client-{user or client}",
            response_format=response_format or None, adapter=self._adapter(model))
        return request, model, stream

    def _adapter(self, model: str) -> AdapterSpec | None:
        """The adapter a model name asks for ("base:adapter", or a name loaded at run time), or
        None for the base model; BadRequest for a model this server does not serve."""
        base, _, adapter_name = model.partition(":")
        loaded = self.loaded.get(model)
        if loaded is not None:
            return loaded
        if base != self.base_model:
            raise BadRequest(f"unknown model {base!r}; this server serves {self.base_model!r}"
                             + (f" and the adapters {', '.join(sorted(self.loaded))}" if self.loaded else ""))
        if not adapter_name:
            return None
        try:
            return self.resolve_adapter(adapter_name)
        except (LookupError, ValueError) as error:
            raise BadRequest(f"unknown adapter {adapter_name!r} ({error})") from None
        except Exception as error:  # noqa: BLE001  (a resolver's database errors: the model id is unusable)
            raise BadRequest(f"unknown adapter {adapter_name!r} ({type(error).__name__})") from None

    async def _chat(self, body: bytes, send, receive, client: str) -> None:
        request, model, streaming = await asyncio.to_thread(self._request, body, client)
        out = self.core.submit(request)
        created = int(time.time())
        if not streaming:
            text, last = [], None
            while last is None:
                delta = await asyncio.to_thread(out.get)
                text.append(delta.text)
                last = delta if delta.finished else None
            if last.finish_reason == "error":
                await _json(send, 400, _error(last.error, "model_error"))
                return
            await _json(send, 200, {
                "id": request.id, "object": "chat.completion", "created": created, "model": model,
                "choices": [{"index": 0, "message": {"role": "assistant", "content": "".join(text)},
                             "finish_reason": last.finish_reason}],
                "usage": _usage(last)})
            return
        await send({"type": "http.response.start", "status": 200, "headers": [
            (b"content-type", b"text/event-stream"), (b"cache-control", b"no-cache")]})
        disconnected = asyncio.ensure_future(_wait_disconnect(receive))

        def chunk(delta: dict, finish: str | None = None, **extra) -> bytes:
            payload = {"id": request.id, "object": "chat.completion.chunk", "created": created, "model": model,
                       "choices": [{"index": 0, "delta": delta, "finish_reason": finish}], **extra}
            return f"data: {json.dumps(payload)}\n\n".encode()

        try:
            await send({"type": "http.response.body", "body": chunk({"role": "assistant"}), "more_body": True})
            while True:
                getter = asyncio.ensure_future(asyncio.to_thread(out.get))
                done, _ = await asyncio.wait({getter, disconnected}, return_when=asyncio.FIRST_COMPLETED)
                if disconnected in done:
                    self.core.cancel(request.id)  # stops decoding it at the next step
                    getter.cancel()
                    return
                delta = getter.result()
                if delta.finished and delta.finish_reason == "error":
                    body = chunk({}, "error", error={"message": delta.error, "type": "model_error"})
                elif delta.finished:
                    body = (chunk({"content": delta.text} if delta.text else {}, delta.finish_reason,
                                  usage=_usage(delta)) + b"data: [DONE]\n\n")
                else:
                    body = chunk({"content": delta.text})
                await send({"type": "http.response.body", "body": body, "more_body": not delta.finished})
                if delta.finished:
                    return
        finally:
            disconnected.cancel()


def _usage(delta: Delta) -> dict:
    return {"prompt_tokens": delta.prompt_tokens, "completion_tokens": delta.completion_tokens,
            "total_tokens": delta.prompt_tokens + delta.completion_tokens}


def _error(message: str, kind: str) -> dict:
    return {"error": {"message": message, "type": kind}}


async def _body(receive) -> bytes:
    chunks, more = [], True
    while more:
        message = await receive()
        chunks.append(message.get("body", b""))
        more = message.get("more_body", False)
    return b"".join(chunks)


async def _wait_disconnect(receive) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass


async def _text(send, status: int, text: str) -> None:
    body = text.encode()
    await send({"type": "http.response.start", "status": status, "headers": [
        (b"content-type", b"text/plain; charset=utf-8"), (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})


async def _json(send, status: int, payload: dict) -> None:
    body = json.dumps(payload).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})
