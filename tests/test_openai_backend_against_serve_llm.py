"""`manage.py serve_llm` serves our engine over an OpenAI-compatible API, and the `openai` backend
streams from it over real HTTP with the same output as the engine in-process."""

from __future__ import annotations

import json
import os
import re
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from django.conf import settings

from agents.llm.openai_backend import OpenAIEngine
from agents.llm.transformers_backend import TransformersEngine
from agents.llm.types import AdapterSpec, GenerationRequest
from tests.support.factories import vouched
from tests.support.processes import database_url_for_subprocess, free_port, start_serve_llm
from tests.support.streams import collect as _collect
from webapp.registry import services

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def server(served):
    return served[0]


@pytest.fixture
def served(transactional_db, tiny_model_dir, tiny_adapters, tmp_path):
    """`manage.py serve_llm` on the tiny model: (its URL, its process)."""
    base = services.base_model_register(name="tiny", path=str(tiny_model_dir), activate=True)
    services.adapter_register(role="writer", path=str(tiny_adapters["writer"]), base_model=base, activate=True,
                              override=vouched())
    env = dict(os.environ, DATABASE_URL=database_url_for_subprocess(), SCRIPTORIUM_LLM_DTYPE="float32",
               SCRIPTORIUM_DATA_DIR=str(settings.DATA_DIR), SCRIPTORIUM_LLM_DEVICE="cpu")
    env.pop("SCRIPTORIUM_MODEL", None)
    url, process = start_serve_llm(env, tmp_path / "serve.log")
    yield url, process
    process.terminate()
    process.wait(timeout=20)


def _requests():
    messages = [{"role": "system", "content": "You write field guides."}]
    return [
        GenerationRequest(id="a", messages=messages + [{"role": "user", "content": "Gulls"}], max_new_tokens=12),
        GenerationRequest(id="b", messages=messages + [{"role": "user", "content": "Terns"}], max_new_tokens=7,
                          adapter=AdapterSpec("writer@1", "")),
        # What the section writer relies on: a draft to continue, a repetition penalty, min tokens.
        GenerationRequest(id="c", messages=messages + [{"role": "user", "content": "Puffins"}], max_new_tokens=9,
                          assistant_prefix="Puffins nest in burrows", repetition_penalty=1.3, min_new_tokens=9),
    ]


def test_the_openai_backend_streams_what_the_engine_writes(server, tiny_model_dir, tiny_adapters):
    remote_texts, remote_ends = _collect(OpenAIEngine(server, "tiny"), _requests())
    local = TransformersEngine(tiny_model_dir, dtype="float32")
    local_requests = _requests()
    local_requests[1].adapter = AdapterSpec("writer@1", str(tiny_adapters["writer"]))
    local_texts, _ = _collect(local, local_requests)
    assert remote_texts == local_texts
    assert remote_ends["a"].finish_reason == "length" and remote_ends["a"].completion_tokens == 12
    assert remote_ends["b"].completion_tokens == 7 and remote_ends["b"].prompt_tokens > 5
    plain = _collect(local, [GenerationRequest(id="c", messages=local_requests[2].messages, max_new_tokens=9)])[0]
    assert remote_texts["c"] != plain["c"]  # the extras reached the server and changed the text


def test_models_non_streaming_and_errors(server):
    models = json.load(urllib.request.urlopen(server + "/models"))
    assert [m["id"] for m in models["data"]] == ["tiny", "tiny:writer@1"]

    def post(body):
        request = urllib.request.Request(server + "/chat/completions", data=json.dumps(body).encode(),
                                         headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(request) as response:
                return response.status, json.load(response)
        except urllib.error.HTTPError as error:
            return error.code, json.load(error)

    status, body = post({"model": "tiny:writer", "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 5})
    assert status == 200 and body["choices"][0]["finish_reason"] == "length"
    assert body["usage"]["completion_tokens"] == 5 and body["choices"][0]["message"]["content"]
    status, body = post({"model": "gpt-4", "messages": [{"role": "user", "content": "Hi"}]})
    assert status == 400 and "unknown model" in body["error"]["message"]
    status, body = post({"model": "tiny:nobody", "messages": [{"role": "user", "content": "Hi"}]})
    assert status == 400 and "unknown adapter" in body["error"]["message"]
    status, body = post({"model": "tiny", "messages": "Hi"})
    assert status == 400
    hi = [{"role": "user", "content": "Hi"}]
    for bad in ([], None, "x", {"messages": hi, "stop": 5}, {"messages": hi, "max_tokens": 1e400},
                {"messages": hi, "temperature": "hot"}, {"messages": hi, "max_tokens": True},
                {"messages": hi + [{"role": "user", "content": "more"}], "continue_final_message": True}):
        status, body = post(bad)
        assert status == 400 and body["error"]["type"] == "invalid_request_error", bad
    metrics = urllib.request.urlopen(server.removesuffix("/v1") + "/metrics").read().decode()
    assert re.search(r'scriptorium_llm_requests_finished_total\{device="cpu[^"]*",model="tiny",reason="length"\}',
                     metrics)
    assert "scriptorium_llm_kv_tokens_budget" in metrics and "time_to_first_token_seconds_bucket" in metrics


def test_an_unreachable_server_fails_each_request_with_a_clear_error():
    texts, ends = _collect(OpenAIEngine(f"http://127.0.0.1:{free_port()}/v1", "tiny"), _requests())
    assert {e.finish_reason for e in ends.values()} == {"error"}
    assert "Connection refused" in ends["a"].error


def _post(url: str, body: dict, timeout: float = 60) -> tuple[int, dict]:
    request = urllib.request.Request(url + "/chat/completions", data=json.dumps(body).encode(),
                                     headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, json.load(response)
    except urllib.error.HTTPError as error:
        return error.code, json.load(error)


def test_a_prompt_past_the_context_is_refused_before_any_work(server):
    status, body = _post(server, {"messages": [{"role": "user", "content": "tide " * 40_000}], "max_tokens": 5})
    assert status == 400 and "context" in body["error"]["message"]


def test_response_format_guides_the_answer_through_the_server_and_the_backend(server):
    schema = {"type": "object", "properties": {"bird": {"type": "string", "maxLength": 12},
                                               "count": {"type": "integer", "minimum": 0, "maximum": 99}},
              "required": ["bird", "count"], "additionalProperties": False}
    response_format = {"type": "json_schema", "json_schema": {"name": "sighting", "schema": schema}}
    status, body = _post(server, {"messages": [{"role": "user", "content": "A sighting"}], "max_tokens": 60,
                                  "response_format": response_format})
    assert status == 200, body
    answer = json.loads(body["choices"][0]["message"]["content"])  # a random model, held to the schema
    assert set(answer) == {"bird", "count"} and 0 <= answer["count"] <= 99 and len(answer["bird"]) <= 12
    assert body["choices"][0]["finish_reason"] == "stop"
    # The app's backend for a remote server sends it on (what vLLM and llama.cpp's server take too).
    texts, ends = _collect(OpenAIEngine(server, "tiny"), [GenerationRequest(
        id="g", messages=[{"role": "user", "content": "Another"}], max_new_tokens=60, response_format=response_format)])
    assert set(json.loads(texts["g"])) == {"bird", "count"} and ends["g"].finish_reason == "stop"
    status, body = _post(server, {"messages": [{"role": "user", "content": "x"}],
                                  "response_format": {"type": "json_schema", "json_schema": {"schema": 7}}})
    assert status == 400 and "schema" in body["error"]["message"]


def test_sigterm_stops_the_server_within_seconds_answering_what_runs(served, tiny_model_dir):
    """A non-streamed request as long as the context runs when SIGTERM comes: it is answered
    (cancelled) and the server exits, instead of waiting for it (SIGTERM used to be ignored)."""
    import signal
    import threading

    url, process = served
    context = json.loads((tiny_model_dir / "config.json").read_text())["max_position_embeddings"]
    answers = []
    body = {"messages": [{"role": "user", "content": "Write on."}], "max_tokens": context - 20}
    thread = threading.Thread(target=lambda: answers.append(_post(url, body)))
    thread.start()
    time.sleep(1.0)  # it is decoding
    started = time.monotonic()
    process.send_signal(signal.SIGTERM)
    process.wait(timeout=30)
    stopped = time.monotonic() - started
    thread.join(timeout=10)
    assert stopped < 15, stopped
    assert process.returncode in (0, -signal.SIGTERM)  # uvicorn ends by re-raising the signal it handled
    if answers:  # answered before the socket closed: cancelled, or finished just before
        assert answers[0][0] == 200 and answers[0][1]["choices"][0]["finish_reason"] in ("cancelled", "length")


def test_a_sentence_search_row_over_http_stops_after_its_sentence_with_its_logprobs():
    """A server that streams OpenAI chunks with each token's log-probability (as vLLM and
    llama.cpp's server do): the backend asks for them, sums them, and ends the request after the
    sentences asked, closing the stream (the writers' candidates are one sentence each)."""
    import http.server
    import threading

    seen: list[dict] = []

    class Streams(http.server.BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802  (http.server's name)
            seen.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
            self.send_response(200)
            self.send_header("Content-Type", "text/event-stream")
            self.end_headers()
            try:
                for piece in ["The tide", " rose fast.", " Then it", " fell.", " And more."]:
                    chunk = {"choices": [{"delta": {"content": piece},
                                          "logprobs": {"content": [{"token": piece, "logprob": -0.5}]}}]}
                    self.wfile.write(f"data: {json.dumps(chunk)}\n\n".encode())
                    self.wfile.flush()
                self.wfile.write(b"data: [DONE]\n\n")
            except BrokenPipeError:
                pass

        def log_message(self, *args):
            pass

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Streams)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        engine = OpenAIEngine(f"http://127.0.0.1:{httpd.server_port}/v1", "tiny")
        request = GenerationRequest(id="s", messages=[{"role": "user", "content": "Tides"}], sentences=1,
                                    logprobs=True, max_new_tokens=40)
        deltas = list(engine.stream([request]))
    finally:
        httpd.shutdown()
    assert "".join(d.text for d in deltas) == "The tide rose fast."
    last = deltas[-1]
    assert last.finished and last.finish_reason == "stop"
    assert last.logprob == pytest.approx(-1.5)  # the tokens read up to the one past the sentence's end
    assert seen[0]["logprobs"] is True
