"""The engine of this process, created on first use and kept for the life of the process, and the
serving metrics it publishes.

Created lazily so that nothing touches CUDA before Celery forks its pool; on a GPU machine, run
one `agents` worker per GPU with CUDA_VISIBLE_DEVICES, so each process sees one device."""

from __future__ import annotations

import atexit
import dataclasses
import functools
import json
import logging
import os
import threading
import time
from collections.abc import Iterable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from django.conf import settings

from agents.llm.files import ModelFolderError
from agents.llm.metrics import prometheus_text
from agents.llm.types import CancelCheck, Delta, Engine, GenerationRequest
from webapp.redis import client as redis_client
from webapp.registry import services as registry
from webapp.registry import store

log = logging.getLogger(__name__)

METRICS_KEY = "scriptorium:serving:"
METRICS_EVERY_S = 2.0


def model_folder() -> tuple[str, str]:
    """(name, folder) of the base model this process serves: SCRIPTORIUM_MODEL, else the active
    base model in the registry, else the bundled SmolLM2 (converted on first use)."""
    if settings.SCRIPTORIUM_MODEL:
        return os.path.basename(os.path.normpath(settings.SCRIPTORIUM_MODEL)), settings.SCRIPTORIUM_MODEL
    active = registry.active_base_model()
    if active is not None:
        return active.name, _local(active)
    from agents.llm.bundled import BUNDLED_NAME, bundled_model_dir

    return BUNDLED_NAME, str(bundled_model_dir(settings.DATA_DIR / "models"))


# Read once per process: a newly activated base model is loaded when workers restart, so a
# worker never holds the old and the new one at once.
_default_model = functools.cache(model_folder)


def get_engine(role: str = "") -> Engine:
    """The engine for `role`: the one the registry assigns to that role (say a distilled student
    for the reviewer, read on every call), else the default model's. Each is created on first use
    and kept for the life of the process."""
    if settings.SCRIPTORIUM_LLM_BACKEND == "openai":
        return _openai_engine()
    assigned = registry.model_for_role(role) if role else None
    if assigned is not None:
        return load_engine(assigned.name, _local(assigned))
    return load_engine(*_default_model())


def _local(model) -> str:
    """This machine's folder of a registered base model (downloaded by its checksum if need be)."""
    try:
        return registry.local_path(model)
    except store.FetchError as error:
        raise ModelFolderError(f"{model.name}: {error}") from error


@functools.cache
def _openai_engine() -> Engine:
    from agents.llm.openai_backend import OpenAIEngine

    return OpenAIEngine(settings.OPENAI_BASE_URL, settings.OPENAI_MODEL, api_key=settings.OPENAI_API_KEY,
                        adapters_by_name=bool(settings.SCRIPTORIUM_LORA_SERVERS))


_ENGINES: dict[tuple[str, str], Engine] = {}  # (name, folder) -> the engine, created once
_creating = threading.Lock()  # the worker's task threads may ask for the engine at once


def load_engine(name: str, folder: str) -> Engine:
    """The engine of model `name` in `folder`, created on first use and kept for the process."""
    with _creating:
        return _load_engine(name, folder)


def _load_engine(name: str, folder: str) -> Engine:
    if (name, folder) in _ENGINES:
        return _ENGINES[(name, folder)]
    import torch

    from agents.llm.config import EngineConfig
    from agents.llm.transformers_backend import TransformersEngine

    device = settings.SCRIPTORIUM_LLM_DEVICE or ("cuda" if torch.cuda.is_available() else "cpu")
    draft = settings.SCRIPTORIUM_DRAFT_MODEL
    if draft and os.path.realpath(draft) == os.path.realpath(folder):
        draft = ""  # the student serving a role of its own needs no draft of itself
    from agents.llm import tuning

    dtype, weights, reason = settings.SCRIPTORIUM_LLM_DTYPE, settings.SCRIPTORIUM_LLM_WEIGHTS, "set by the settings"
    threads = settings.SCRIPTORIUM_LLM_THREADS or tuning.process_cores()
    if weights == "auto" and dtype == "auto" and device == "cpu":
        from agents.llm.loading import cpu_has_fast_bf16

        choice = tuning.choose(folder, settings.DATA_DIR / "engine-choice.json", cpu_has_fast_bf16())
        dtype, weights, reason = choice.dtype, choice.weights, choice.reason
        threads = settings.SCRIPTORIUM_LLM_THREADS or choice.threads
    served = folder
    if weights == "int8" and device == "cpu":
        from agents.llm.quantization import cached_int8, is_int8_folder

        try:  # quantized once per model, not at every start
            served = folder if is_int8_folder(folder) else str(cached_int8(folder, settings.DATA_DIR / "int8"))
        except OSError as error:  # a read-only data folder: quantized in memory at every start
            log.warning("could not keep the int8 folder of %s (%s); quantizing in memory", folder, error)
    engine = TransformersEngine(EngineConfig(
        served, dtype=dtype, device=device, int8=weights == "int8", threads=threads if device == "cpu" else None,
        base_model_name=name, draft_model_path=draft, draft_tokens=settings.SCRIPTORIUM_DRAFT_TOKENS,
        max_rows=settings.SCRIPTORIUM_MAX_ROWS, kv_budget_tokens=settings.SCRIPTORIUM_KV_BUDGET_TOKENS,
        prefill_chunk=settings.SCRIPTORIUM_PREFILL_CHUNK, prefix_cache_tokens=settings.SCRIPTORIUM_PREFIX_CACHE_TOKENS))
    engine.chosen = reason
    log.info("engine %s: %s weights, %s forward, %s threads (%s)", name, engine.weights, engine.forward_kind,
             threads, reason)
    _ENGINES[(name, folder)] = engine
    if len(_ENGINES) == 1:
        _start_metrics()
        # The serving cores' threads are stopped before the interpreter goes: one still inside a
        # torch call at exit aborted a `manage.py evaluate` that had finished ("terminate called
        # without an active exception", exit status -6).
        atexit.register(_close_engines)
    return engine


def _close_engines() -> None:
    for engine in list(_ENGINES.values()):
        close = getattr(engine, "close", None)
        if close is not None:
            close()


def serving_metrics() -> dict[str, dict[str, float | str]]:
    """This process's serving cores' numbers (queue, rows, KV, tokens/s, the device's memory and
    load) and the device each runs on, by model name."""
    return {getattr(engine, "base_model_name", key[0]): {
                "device": engine.core.device_name, "dtype": str(engine.dtype).removeprefix("torch."),
                "weights": engine.weights, "forward": engine.forward_kind, "chosen": engine.chosen,
                "threads": engine.core.threads or 0,
                **engine.core.metrics()}
            for key, engine in list(_ENGINES.items()) if hasattr(engine, "core")}


def _start_metrics() -> None:
    """Publish the cores' numbers to Redis every few seconds (for /healthz), and serve them as
    Prometheus text on SCRIPTORIUM_WORKER_METRICS_PORT when that is set."""
    worker = os.environ.get("SCRIPTORIUM_WORKER_NAME") or f"{os.uname().nodename}:{os.getpid()}"

    def publish() -> None:
        while True:
            try:
                redis_client().set(METRICS_KEY + worker, json.dumps(serving_metrics()), ex=int(4 * METRICS_EVERY_S))
            except Exception:  # noqa: BLE001  (Redis down: /healthz says so; serving goes on)
                log.debug("could not publish serving metrics", exc_info=True)
            time.sleep(METRICS_EVERY_S)

    threading.Thread(target=publish, name="serving-metrics", daemon=True).start()
    port = int(os.environ.get("SCRIPTORIUM_WORKER_METRICS_PORT") or 0)
    if port:
        server = ThreadingHTTPServer((os.environ.get("SCRIPTORIUM_WORKER_METRICS_HOST", "127.0.0.1"), port),
                                     _MetricsHandler)
        threading.Thread(target=server.serve_forever, name="metrics-http", daemon=True).start()


class _MetricsHandler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802  (http.server's naming)
        if self.path.rstrip("/") != "/metrics":
            self.send_error(404)
            return
        worker = os.environ.get("SCRIPTORIUM_WORKER_NAME", "")
        body = "".join(prometheus_text(values, {"model": model, "worker": worker, "device": str(values["device"]),
                                                "dtype": str(values["dtype"]), "weights": str(values["weights"]),
                                                "forward": str(values["forward"])})
                       for model, values in serving_metrics().items()).encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/plain; version=0.0.4")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args) -> None:
        pass


def published_metrics() -> dict[str, dict]:
    """What every worker published lately: worker name -> model -> numbers."""
    client = redis_client()
    keys = list(client.scan_iter(METRICS_KEY + "*", count=100))
    values = client.mget(keys) if keys else []
    return {key.decode()[len(METRICS_KEY):]: json.loads(value) for key, value in zip(keys, values, strict=True)
            if value}


class Scheduled:
    """An engine whose requests all carry one group and priority: a run's writers share rows
    fairly with other runs; a rewrite, an outline or a title goes before bulk writing."""

    def __init__(self, engine: Engine, group: str, priority: int):
        self.engine, self.group, self.priority = engine, group, priority

    def stream(self, requests: Iterable[GenerationRequest], cancel: CancelCheck | None = None) -> Iterator[Delta]:
        return self.engine.stream([dataclasses.replace(r, group=self.group, priority=self.priority)
                                   for r in requests], cancel)

    def __getattr__(self, name: str):  # base_model_name and the like
        return getattr(self.engine, name)


def for_run(role: str, run_id: int, priority: int) -> Engine:
    """The engine for `role`, its requests scheduled as part of run `run_id`."""
    return Scheduled(get_engine(role), f"run-{run_id}", priority)


def with_role_adapters(requests: Iterable[tuple[str, GenerationRequest]]) -> list[GenerationRequest]:
    """Give each request the adapter its role uses now (looked up per call, never cached)."""
    resolved: dict[str, object] = {}
    out = []
    for role, request in requests:
        if role not in resolved:
            resolved[role] = registry.resolve_adapter(role)
        request.adapter = resolved[role]
        out.append(request)
    return out
