"""An engine that forwards requests to any OpenAI-compatible /v1/chat/completions server with
streaming (vLLM, llama.cpp's server, Ollama, or our own `manage.py serve_llm`).

Each request is one streaming HTTP call on its own thread; deltas from all of them come back
through one queue in the order they arrive. A request with an adapter asks for the model
"<model>:<adapter name>", which is how our own server names adapters."""

from __future__ import annotations

import json
import queue
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterable, Iterator

from agents.llm.types import CancelCheck, Delta, GenerationRequest


class OpenAIEngine:
    def __init__(self, base_url: str, model: str, *, api_key: str = "", timeout_s: float = 600.0):
        self.base_url = base_url.rstrip("/")
        self.model = model
        self.api_key = api_key
        self.timeout_s = timeout_s

    def stream(self, requests: Iterable[GenerationRequest], cancel: CancelCheck | None = None) -> Iterator[Delta]:
        batch = list(requests)
        out: queue.Queue[Delta] = queue.Queue()
        stops = {r.id: threading.Event() for r in batch}
        for request in batch:
            threading.Thread(target=self._run, args=(request, out, stops[request.id]), daemon=True).start()
        running = {r.id for r in batch}
        while running:
            try:
                delta = out.get(timeout=0.05)
            except queue.Empty:
                delta = None
            if delta is not None:
                if delta.finished:
                    running.discard(delta.request_id)
                yield delta
            if cancel and running:
                for rid in cancel(sorted(running)):
                    stops[rid].set()  # the thread closes its connection and reports "cancelled"

    def _payload(self, request: GenerationRequest) -> bytes:
        messages = request.messages if request.messages is not None else [{"role": "user", "content": request.prompt}]
        model = f"{self.model}:{request.adapter.name}" if request.adapter else self.model
        body = {"model": model, "messages": messages, "max_tokens": request.max_new_tokens,
                "temperature": request.temperature, "top_p": request.top_p, "seed": request.seed,
                "stream": True, "stream_options": {"include_usage": True}}
        if request.stop:
            body["stop"] = list(request.stop)
        return json.dumps(body).encode()

    def _run(self, request: GenerationRequest, out: queue.Queue[Delta], stop: threading.Event) -> None:
        started = time.monotonic()
        headers = {"Content-Type": "application/json", "Accept": "text/event-stream"}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        http_request = urllib.request.Request(f"{self.base_url}/chat/completions", data=self._payload(request),
                                              headers=headers, method="POST")
        tokens = {"prompt": 0, "completion": 0}
        first: float | None = None
        reason: str | None = None
        try:
            with urllib.request.urlopen(http_request, timeout=self.timeout_s) as response:
                for raw in response:
                    if stop.is_set():
                        reason = "cancelled"
                        break
                    line = raw.decode("utf-8").strip()
                    if not line.startswith("data:"):
                        continue
                    data = line[5:].strip()
                    if data == "[DONE]":
                        break
                    chunk = json.loads(data)
                    if chunk.get("error"):
                        raise RuntimeError(chunk["error"].get("message", "server error"))
                    usage = chunk.get("usage") or {}
                    tokens["prompt"] = usage.get("prompt_tokens", tokens["prompt"])
                    tokens["completion"] = usage.get("completion_tokens", tokens["completion"])
                    for choice in chunk.get("choices") or []:
                        text = (choice.get("delta") or {}).get("content") or ""
                        if text:
                            first = first if first is not None else time.monotonic() - started
                            out.put(Delta(request.id, text, prompt_tokens=tokens["prompt"],
                                          completion_tokens=tokens["completion"]))
                        reason = choice.get("finish_reason") or reason
        except urllib.error.HTTPError as error:
            detail = error.read().decode("utf-8", "replace")[:500]
            out.put(Delta(request.id, finished=True, finish_reason="error",
                          error=f"{self.base_url}: HTTP {error.code}: {detail}"))
            return
        except (OSError, ValueError, RuntimeError) as error:
            out.put(Delta(request.id, finished=True, finish_reason="error", error=f"{self.base_url}: {error}"))
            return
        timings = {"elapsed_s": round(time.monotonic() - started, 4)}
        if first is not None:
            timings["first_token_s"] = round(first, 4)
        out.put(Delta(request.id, finished=True, finish_reason=reason or "stop", prompt_tokens=tokens["prompt"],
                      completion_tokens=tokens["completion"], timings=timings))
