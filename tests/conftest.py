"""Named fixtures shared by the suite: people in every role, a project, a document, Redis, a real
Celery worker process, a web server, a browser, tiny models and the bundled model (loaded once).
Helpers that are not fixtures live in tests/support/."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
from django.conf import settings

from tests.support.browser import CHROMIUM
from tests.support.factories import make_document, make_project, make_user
from tests.support.processes import ROOT, ObjectStore, WebServer, database_url_for_subprocess, free_port

# The app's tests run writers on a random-weight tiny model whose text is random tokens: the
# writers' filter (agents/quality.py) would cut all of it. They run with it off, as processes they
# start inherit; the filter is tested on recorded outputs of the bundled model
# (test_writer_filters.py) and on in the app with the bundled model (test_writing_runs.py).
os.environ.setdefault("SCRIPTORIUM_WRITER_FILTERS", "none")
# The app's tests run float weights as they always did (the reference); the engine's choice of
# weights per machine is tested on its own (test_engine_at_the_machines_limit.py).
os.environ.setdefault("SCRIPTORIUM_LLM_WEIGHTS", "float")
settings.SCRIPTORIUM_LLM_WEIGHTS = os.environ["SCRIPTORIUM_LLM_WEIGHTS"]


@pytest.fixture(autouse=True)
def writer_filters_off_for_random_models(settings):
    settings.SCRIPTORIUM_WRITER_FILTERS = []


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
def presence_claims_forgotten(redis_server):
    """Documents and people of an earlier test may have the same ids: their Yjs clients' presence
    claims (documents/presence.py) must not hold in this one."""
    from webapp.redis import client

    redis = client()
    keys = list(redis.scan_iter("presence:*", count=1000))
    if keys:
        redis.delete(*keys)


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


@pytest.fixture(scope="session")
def celery_worker_process(django_db_setup, django_db_blocker, redis_server, tmp_path_factory, tiny_model_dir):
    """A real `celery worker` process on Redis consuming every queue, against the test database,
    with the tiny model as its LLM.

    Tests that use it need `transactional_db`, so their rows are committed where it can see them."""
    with django_db_blocker.unblock():
        database_url = database_url_for_subprocess()
    name = f"test-{uuid.uuid4().hex[:8]}@%h"
    env = dict(os.environ, DATABASE_URL=database_url, REDIS_URL=redis_server,
               SCRIPTORIUM_DATA_DIR=str(settings.DATA_DIR), MEDIA_ROOT=str(settings.MEDIA_ROOT),
               SCRIPTORIUM_MODEL=str(tiny_model_dir), SCRIPTORIUM_LLM_DTYPE="float32", SCRIPTORIUM_LLM_DEVICE="cpu",
               SCRIPTORIUM_WORKER_METRICS_PORT=str(free_port()), SCRIPTORIUM_TRAINING_ADDRESS="127.0.0.1",
               SCRIPTORIUM_GATE_BRIEFS="1", SCRIPTORIUM_GATE_WORDS="40",  # the promotion gate, in seconds
               # Its watcher stays out of the way of tests that set up a run's state by hand and
               # call requeue_stale themselves; tests of the watcher start workers of their own.
               RUNS_WATCH_EVERY_S="3600")
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


@pytest.fixture
def web_server(transactional_db, redis_server, tmp_path):
    """A real ASGI server (HTTP and WebSockets) on a free port; `.stop()` and `.start()` restart it."""
    env = dict(os.environ, DATABASE_URL=database_url_for_subprocess(), REDIS_URL=redis_server,
               SCRIPTORIUM_DATA_DIR=str(settings.DATA_DIR), MEDIA_ROOT=str(settings.MEDIA_ROOT),
               ALLOWED_HOSTS="127.0.0.1,localhost", DJANGO_ALLOW_ASYNC_UNSAFE="")
    server = WebServer(env, tmp_path / "web.log").start()
    yield server
    server.stop()


@pytest.fixture
def object_store(tmp_path):
    """An S3-compatible server (moto's) with an empty bucket, for this test only."""
    store = ObjectStore(tmp_path / "s3.log").start()
    yield store
    store.stop()


@pytest.fixture
def s3_storage(object_store, settings, monkeypatch, tmp_path):
    """This process's files in that object storage, as STORAGE_URL puts them, and a model cache of
    its own: what a web or worker machine without a shared folder has."""
    from webapp.settings import storages_from_env

    for name, value in object_store.env.items():
        monkeypatch.setenv(name, value)
    settings.STORAGES = storages_from_env()
    settings.MODEL_CACHE_DIR = tmp_path / "model-cache"
    return object_store


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    from tests.support.tiny_models import build_tiny_model

    return build_tiny_model(tmp_path_factory.mktemp("tiny-model"))


@pytest.fixture(scope="session")
def tiny_adapters(tiny_model_dir, tmp_path_factory) -> dict[str, Path]:
    """Two random LoRA adapters for the tiny model, named by the role they stand in for."""
    from tests.support.tiny_models import build_adapter

    root = tmp_path_factory.mktemp("adapters")
    return {role: build_adapter(tiny_model_dir, root / role, seed=seed)
            for seed, role in enumerate(("writer", "reviewer"), start=1)}


@pytest.fixture(scope="session")
def bundled_engine():
    """The bundled SmolLM2 as this process's engine (webapp.llm's table, so `manage.py evaluate`
    and tests that build nothing of their own share it): loaded once per session."""
    from agents.llm.bundled import BUNDLED_NAME, bundled_model_dir
    from webapp import llm

    return llm.load_engine(BUNDLED_NAME, str(bundled_model_dir(settings.DATA_DIR / "models")))


@pytest.fixture
def browser():
    """Debian's Chromium under Playwright. Playwright's sync API runs an event loop in this
    thread; the test's ORM calls are still plain synchronous calls, so Django is told not to
    refuse them while the browser is open."""
    from django.db import connections
    from playwright.sync_api import sync_playwright

    unsafe = os.environ.get("DJANGO_ALLOW_ASYNC_UNSAFE")
    os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = "true"
    try:
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(
                executable_path=CHROMIUM,
                args=["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                      "--disable-component-update", "--disable-sync", "--no-first-run"])
            yield browser
            browser.close()
            # The ORM calls made while Playwright runs get their own connection (Django keeps
            # connections per context, and Playwright switches contexts); close it here, or it
            # keeps the test database from being dropped at the end.
            connections.close_all()
    finally:
        if unsafe is None:
            os.environ.pop("DJANGO_ALLOW_ASYNC_UNSAFE", None)
        else:
            os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = unsafe
