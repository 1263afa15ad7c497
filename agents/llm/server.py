"""An OpenAI-compatible HTTP server over our own engine, so one GPU machine can serve many CPU
workers: POST /v1/chat/completions (streaming or not) and GET /v1/models.

`model` names the base model, or `base:adapter` for a LoRA adapter ("writer" for the version the
role uses now, "writer@3" for a given version). Requests that arrive together are decoded in one
batch: a batcher thread gathers whatever is waiting, runs it, and starts again. A plain ASGI app:
run it with uvicorn (`manage.py serve_llm` does).
"""

from __future__ import annotations

import asyncio
import json
import logging
import queue
import threading
import time
import uuid
from collections.abc import Callable

from agents.llm.types import AdapterSpec, Delta, Engine, GenerationRequest

log = logging.getLogger(__name__)

AdapterResolver = Callable[[str], AdapterSpec | None]


class BadRequest(Exception):
    pass


class Batcher:
    """Feeds the engine batches of whatever requests are waiting, from one thread."""

    def __init__(self, engine: Engine, max_batch: int = 32, gather_s: float = 0.01):
        self.engine, self.max_batch, self.gather_s = engine, max_batch, gather_s
        self.waiting: queue.Queue[tuple[GenerationRequest, queue.Queue[Delta]]] = queue.Queue()
        self.cancelled: set[str] = set()
        self.thread = threading.Thread(target=self._run, name="llm-batcher", daemon=True)
        self.thread.start()

    def submit(self, request: GenerationRequest) -> queue.Queue[Delta]:
        out: queue.Queue[Delta] = queue.Queue()
        self.waiting.put((request, out))
        return out

    def _run(self) -> None:
        while True:
            batch = [self.waiting.get()]
            deadline = time.monotonic() + self.gather_s
            while len(batch) < self.max_batch:
                try:
                    batch.append(self.waiting.get(timeout=max(0.0, deadline - time.monotonic())))
                except queue.Empty:
                    break
            outs = {request.id: out for request, out in batch}
            try:
                for delta in self.engine.stream([r for r, _ in batch], cancel=self._cancelled):
                    outs[delta.request_id].put(delta)
            except Exception as error:  # noqa: BLE001  (report to every waiting client, keep serving)
                log.exception("batch failed")
                for rid, out in outs.items():
                    out.put(Delta(rid, finished=True, finish_reason="error", error=str(error)))

    def _cancelled(self, active: list[str]) -> set[str]:
        return self.cancelled.intersection(active)


class OpenAICompatibleApp:
    def __init__(self, engine: Engine, base_model: str, resolve_adapter: AdapterResolver,
                 list_adapters: Callable[[], list[str]] = list):
        self.base_model = base_model
        self.resolve_adapter = resolve_adapter
        self.list_adapters = list_adapters
        self.batcher = Batcher(engine)

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":  # run with lifespan="off": nothing to set up per server
            return
        path, method = scope["path"].rstrip("/"), scope["method"]
        try:
            # The resolvers may query a database: keep them off the event loop.
            if path == "/v1/models" and method == "GET":
                await _json(send, 200, await asyncio.to_thread(self._models))
            elif path == "/v1/chat/completions" and method == "POST":
                await self._chat(await _body(receive), send, receive)
            else:
                await _json(send, 404, _error(f"no route for {method} {path}", "not_found"))
        except BadRequest as error:
            await _json(send, 400, _error(str(error), "invalid_request_error"))

    def _models(self) -> dict:
        names = [self.base_model] + [f"{self.base_model}:{a}" for a in self.list_adapters()]
        return {"object": "list", "data": [{"id": n, "object": "model", "owned_by": "scriptorium"} for n in names]}

    def _request(self, body: bytes) -> tuple[GenerationRequest, str, bool]:
        try:
            data = json.loads(body or b"{}")
        except ValueError as error:
            raise BadRequest(f"the body is not JSON ({error})") from None
        model = str(data.get("model") or self.base_model)
        base, _, adapter_name = model.partition(":")
        if base != self.base_model:
            raise BadRequest(f"unknown model {base!r}; this server serves {self.base_model!r}")
        messages = data.get("messages")
        if not isinstance(messages, list) or not messages or not all(
                isinstance(m, dict) and isinstance(m.get("content"), str) for m in messages):
            raise BadRequest("messages must be a non-empty list of {role, content} objects")
        stop = data.get("stop") or ()
        stop = (stop,) if isinstance(stop, str) else tuple(stop)
        try:
            adapter = self.resolve_adapter(adapter_name) if adapter_name else None
            request = GenerationRequest(
                id=f"chatcmpl-{uuid.uuid4().hex[:20]}",
                messages=[{"role": str(m.get("role", "user")), "content": m["content"]} for m in messages],
                adapter=adapter, max_new_tokens=int(data.get("max_tokens") or data.get("max_completion_tokens") or 256),
                temperature=float(data.get("temperature", 0.0) or 0.0), top_p=float(data.get("top_p", 1.0) or 1.0),
                seed=int(data.get("seed") or 0), stop=stop)
        except (KeyError, LookupError) as error:
            raise BadRequest(f"unknown adapter {adapter_name!r} ({error})") from None
        except (TypeError, ValueError) as error:
            raise BadRequest(f"bad parameter: {error}") from None
        return request, model, bool(data.get("stream"))

    async def _chat(self, body: bytes, send, receive) -> None:
        request, model, streaming = await asyncio.to_thread(self._request, body)
        out = self.batcher.submit(request)
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
                    self.batcher.cancelled.add(request.id)  # stops decoding it at the next step
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


async def _json(send, status: int, payload: dict) -> None:
    body = json.dumps(payload).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})
