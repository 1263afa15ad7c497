"""Named fixtures shared by the suite: people in every role, a project, a document, Redis and a
real Celery worker process."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
from django.conf import settings

from tests.factories import make_document, make_project, make_user

ROOT = Path(__file__).resolve().parent.parent


# Tests that start processes (a Celery worker, a web server) are `slow`, whatever their file says,
# so `make test-fast` (-m "not slow") leaves them out.
PROCESS_FIXTURES = {"celery_worker_process", "web_server", "server"}  # server: serve_llm's process


def pytest_collection_modifyitems(config, items):
    import torch

    skip = pytest.mark.skip(reason="needs a CUDA GPU")
    for item in items:
        if PROCESS_FIXTURES.intersection(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.slow)
        if "gpu" in item.keywords and not torch.cuda.is_available():
            item.add_marker(skip)


@pytest.fixture(scope="session", autouse=True)
def redis_server():
    """A Redis to talk to: REDIS_URL's, or the embedded one, started here if nothing runs."""
    from webapp.launcher import _stop, start_embedded_redis

    env = dict(os.environ)
    process = start_embedded_redis(env) if not env.get("REDIS_URL") else None
    assert env.get("REDIS_URL", settings.REDIS_URL) == settings.REDIS_URL
    yield settings.REDIS_URL
    if process:
        _stop([("embedded Redis", process)])


@pytest.fixture(autouse=True)
def fast_password_hashing(settings):
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


@pytest.fixture
def owner(db):
    return make_user("olivia")


@pytest.fixture
def editor(db):
    return make_user("edgar")


@pytest.fixture
def viewer(db):
    return make_user("vera")


@pytest.fixture
def outsider(db):
    return make_user("oscar")


@pytest.fixture
def project(owner, editor, viewer):
    return make_project(owner, editors=[editor], viewers=[viewer])


@pytest.fixture
def document(project, owner):
    return make_document(project, owner)


def _database_url_for_subprocess() -> str:
    """The URL of the test database, so that worker processes see what the tests write."""
    from django.db import connection

    cfg = connection.settings_dict
    if cfg["ENGINE"].endswith("sqlite3"):
        return f"sqlite:///{cfg['NAME']}"
    user = cfg.get("USER") or ""
    password = f":{cfg['PASSWORD']}" if cfg.get("PASSWORD") else ""
    auth = f"{user}{password}@" if user else ""
    return f"postgres://{auth}{cfg.get('HOST') or '127.0.0.1'}:{cfg.get('PORT') or 5432}/{cfg['NAME']}"


@pytest.fixture(scope="session")
def celery_worker_process(django_db_setup, django_db_blocker, redis_server, tmp_path_factory, tiny_model_dir):
    """A real `celery worker` process on Redis consuming every queue, against the test database,
    with the tiny model as its LLM.

    Tests that use it need `transactional_db`, so their rows are committed where it can see them."""
    with django_db_blocker.unblock():
        database_url = _database_url_for_subprocess()
    name = f"test-{uuid.uuid4().hex[:8]}@%h"
    env = dict(os.environ, DATABASE_URL=database_url, REDIS_URL=redis_server,
               SCRIPTORIUM_DATA_DIR=str(settings.DATA_DIR), MEDIA_ROOT=str(settings.MEDIA_ROOT),
               SCRIPTORIUM_MODEL=str(tiny_model_dir), SCRIPTORIUM_LLM_DTYPE="float32", SCRIPTORIUM_LLM_DEVICE="cpu",
               SCRIPTORIUM_WORKER_METRICS_PORT=str(free_port()))
    log = tmp_path_factory.mktemp("worker") / "worker.log"
    with open(log, "w") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "celery", "-A", "webapp", "worker", "-Q", "agents,default,training",
             "--pool", "threads", "--concurrency", "4", "-n", name, "--loglevel", "INFO"],
            cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT,
        )
    from webapp.celery import app

    hostname = name.replace("%h", os.uname().nodename)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the worker exited early:\n{log.read_text()[-3000:]}")
        if app.control.ping(destination=[hostname], timeout=0.5):
            break
    else:
        process.kill()
        raise RuntimeError(f"the worker did not answer a ping:\n{log.read_text()[-3000:]}")
    process.args_env = env  # what the tests may need to reach it (its metrics port)
    yield process
    process.terminate()
    try:
        process.wait(timeout=20)
    except subprocess.TimeoutExpired:
        process.kill()


class WebServer:
    """`uvicorn webapp.asgi:application` in its own process, against the test database: what a
    browser talks to when a test needs WebSockets (Django's live_server speaks only HTTP)."""

    def __init__(self, env: dict, log: Path):
        self.env, self.log, self.port = env, log, free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.process: subprocess.Popen | None = None

    def start(self) -> WebServer:
        import urllib.request

        with open(self.log, "a") as out:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "uvicorn", "webapp.asgi:application", "--host", "127.0.0.1",
                 "--port", str(self.port), "--log-level", "warning"],
                cwd=ROOT, env=self.env, stdout=out, stderr=subprocess.STDOUT)

        def answers() -> bool:
            if self.process.poll() is not None:
                raise RuntimeError(f"the web server exited:\n{self.log.read_text()[-3000:]}")
            try:
                return urllib.request.urlopen(f"{self.url}/accounts/login/", timeout=1).status == 200
            except OSError:
                return False

        wait_for(answers, timeout=60)
        return self

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()


@pytest.fixture
def web_server(transactional_db, redis_server, tmp_path):
    """A real ASGI server (HTTP and WebSockets) on a free port; `.stop()` and `.start()` restart it."""
    env = dict(os.environ, DATABASE_URL=_database_url_for_subprocess(), REDIS_URL=redis_server,
               SCRIPTORIUM_DATA_DIR=str(settings.DATA_DIR), MEDIA_ROOT=str(settings.MEDIA_ROOT),
               ALLOWED_HOSTS="127.0.0.1,localhost", DJANGO_ALLOW_ASYNC_UNSAFE="")
    server = WebServer(env, tmp_path / "web.log").start()
    yield server
    server.stop()


def free_port() -> int:
    """A loopback port nothing listens on (right now)."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for(predicate, timeout: float = 30.0, interval: float = 0.2):
    """Poll until predicate() is truthy; return its value or fail the test with a clear message."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    pytest.fail(f"condition not met within {timeout}s")


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    from tests.tiny_models import build_tiny_model

    return build_tiny_model(tmp_path_factory.mktemp("tiny-model"))


@pytest.fixture(scope="session")
def tiny_adapters(tiny_model_dir, tmp_path_factory) -> dict[str, Path]:
    """Two random LoRA adapters for the tiny model, named by the role they stand in for."""
    from tests.tiny_models import build_adapter

    root = tmp_path_factory.mktemp("adapters")
    return {role: build_adapter(tiny_model_dir, root / role, seed=seed)
            for seed, role in enumerate(("writer", "reviewer"), start=1)}
