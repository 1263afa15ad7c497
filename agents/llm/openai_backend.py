"""An engine that forwards requests to any OpenAI-compatible /v1/chat/completions server with
streaming (vLLM, llama.cpp's server, Ollama, or our own `manage.py serve_llm`).

Each request is one streaming HTTP call (httpx) on its own thread; deltas from all of them come
back through one queue in the order they arrive. A request with an adapter asks for the model
"<model>:<adapter name>", which is how our own server names adapters, or for the adapter's own
name where the servers load adapters at run time (vLLM). What our roles rely on is
sent, never dropped: `repetition_penalty` and `min_tokens` as the extra parameters vLLM accepts,
an assistant prefix as a final assistant message with `continue_final_message`. A server that
refuses one of them answers 4xx, and the request ends with that error.
"""

from __future__ import annotations

import json
import queue
import threading
import time
from collections.abc import Iterable, Iterator
from typing import Any

import httpx

from agents.llm.types import CancelCheck, Delta, GenerationRequest, relay, sentence_cut


class OpenAIEngine:
    """`adapters_by_name`: an adapter is asked for as the model named like it ("writer@3"), as
    vLLM serves the adapters loaded through its /v1/load_lora_adapter; else "<model>:<adapter>"."""

    def __init__(self, base_url: str, model: str, *, api_key: str = "", timeout_s: float = 600.0,
                 adapters_by_name: bool = False):
        self.base_url = base_url.rstrip("/")
        self.model = model
        self.api_key = api_key
        self.timeout_s = timeout_s
        self.adapters_by_name = adapters_by_name

    def stream(self, requests: Iterable[GenerationRequest], cancel: CancelCheck | None = None) -> Iterator[Delta]:
        batch = list(requests)
        out: queue.Queue[Delta] = queue.Queue()
        stops = {r.id: threading.Event() for r in batch}
        for request in batch:
            threading.Thread(target=self._run, args=(request, out, stops[request.id]), daemon=True).start()
        # A cancelled request's thread closes its connection and reports "cancelled".
        yield from relay(out, [r.id for r in batch], cancel, lambda request_id: stops[request_id].set(), 0.05)

    def payload(self, request: GenerationRequest) -> dict:
        messages = request.messages if request.messages is not None else [{"role": "user", "content": request.prompt}]
        model = self.model
        if request.adapter:
            model = request.adapter.name if self.adapters_by_name else f"{self.model}:{request.adapter.name}"
        body: dict[str, Any] = {"model": model, "messages": list(messages), "max_tokens": request.max_new_tokens,
                "temperature": request.temperature, "top_p": request.top_p, "seed": request.seed,
                "stream": True, "stream_options": {"include_usage": True}}
        if request.stop:
            body["stop"] = list(request.stop)
        if request.repetition_penalty != 1.0:
            body["repetition_penalty"] = request.repetition_penalty
        if request.min_new_tokens:
            body["min_tokens"] = request.min_new_tokens
        if request.assistant_prefix:
            body["messages"].append({"role": "assistant", "content": request.assistant_prefix})
            body.update(continue_final_message=True, add_generation_prompt=False)
        if request.priority:
            body["priority"] = "interactive"
        if request.response_format:  # vLLM, SGLang, llama.cpp's server and serve_llm all take it
            body["response_format"] = request.response_format
        if request.logprobs:  # vLLM and llama.cpp's server send each token's; a server that does not, none
            body["logprobs"] = True
        # `sentences` is applied here (the stream is closed after them); no server takes
        # `no_repeat_ngrams`, `block_ngrams` or `ground`: they apply on the transformers backend only.
        return body

    def _run(self, request: GenerationRequest, out: queue.Queue[Delta], stop: threading.Event) -> None:
        started = time.monotonic()
        headers = {"Accept": "text/event-stream"}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        tokens = {"prompt": 0, "completion": 0}
        first: float | None = None
        reason: str | None = None
        written, logprob, enough = "", None, False
        try:
            timeout = httpx.Timeout(self.timeout_s, connect=10.0)
            with httpx.stream("POST", f"{self.base_url}/chat/completions", json=self.payload(request),
                              headers=headers, timeout=timeout) as response:
                if response.status_code >= 400:
                    detail = response.read().decode("utf-8", "replace")[:500]
                    raise RuntimeError(f"HTTP {response.status_code}: {_message(detail)}")
                for line in response.iter_lines():
                    if stop.is_set():
                        reason = "cancelled"
                        break
                    line = line.strip()
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
                        for item in (choice.get("logprobs") or {}).get("content") or []:
                            logprob = (logprob or 0.0) + float(item.get("logprob", 0.0))
                        cut = sentence_cut(written + text, request.sentences) if request.sentences else None
                        if cut is not None:  # the sentences asked are written: the rest is not wanted
                            text, reason = (written + text)[len(written):cut], "stop"
                        if text:
                            written += text
                            first = first if first is not None else time.monotonic() - started
                            out.put(Delta(request.id, text, prompt_tokens=tokens["prompt"],
                                          completion_tokens=tokens["completion"]))
                        reason = reason if cut is not None else choice.get("finish_reason") or reason
                        enough = enough or cut is not None
                    if enough:
                        break
        except (httpx.HTTPError, OSError, ValueError, RuntimeError) as error:
            out.put(Delta(request.id, finished=True, finish_reason="error", error=f"{self.base_url}: {error}"))
            return
        timings = {"elapsed_s": round(time.monotonic() - started, 4)}
        if first is not None:
            timings["first_token_s"] = round(first, 4)
        out.put(Delta(request.id, finished=True, finish_reason=reason or "stop", prompt_tokens=tokens["prompt"],
                      completion_tokens=tokens["completion"], timings=timings,
                      logprob=logprob if request.logprobs else None))


def _message(body: str) -> str:
    """The message of an OpenAI-shaped error body, else the body itself."""
    try:
        return json.loads(body)["error"]["message"]
    except (ValueError, KeyError, TypeError):
        return body
