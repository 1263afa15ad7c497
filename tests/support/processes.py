"""Helpers for tests that start real processes (a Celery worker, a web server, serve_llm) and
wait on them."""

from __future__ import annotations

import contextlib
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    """A loopback port nothing listens on (right now)."""
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


def database_url_for_subprocess() -> str:
    """The URL of the test database, so that worker processes see what the tests write."""
    from django.db import connection

    cfg = connection.settings_dict
    if cfg["ENGINE"].endswith("sqlite3"):
        return f"sqlite:///{cfg['NAME']}"
    user = cfg.get("USER") or ""
    password = f":{cfg['PASSWORD']}" if cfg.get("PASSWORD") else ""
    auth = f"{user}{password}@" if user else ""
    return f"postgres://{auth}{cfg.get('HOST') or '127.0.0.1'}:{cfg.get('PORT') or 5432}/{cfg['NAME']}"


class WebServer:
    """`uvicorn webapp.asgi:application` in its own process, against the test database: what a
    browser talks to when a test needs WebSockets (Django's live_server speaks only HTTP)."""

    def __init__(self, env: dict, log: Path):
        self.env, self.log, self.port = env, log, free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.process: subprocess.Popen | None = None

    def start(self) -> WebServer:
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


class ObjectStore:
    """moto's S3-compatible server in its own process, with one bucket: the object storage of
    the tests that need one (STORAGE_URL points at it)."""

    def __init__(self, log: Path, bucket: str = "scriptorium"):
        self.port, self.log, self.bucket = free_port(), log, bucket
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self.url = f"s3://{bucket}/site?endpoint_url={self.endpoint}&region=us-east-1"
        self.env = {"STORAGE_URL": self.url, "AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test"}
        self.process: subprocess.Popen | None = None

    def start(self) -> ObjectStore:
        with open(self.log, "a") as out:
            self.process = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p",
                                             str(self.port)], stdout=out, stderr=subprocess.STDOUT)

        def answers() -> bool:
            if self.process.poll() is not None:
                raise RuntimeError(f"the S3 server exited:\n{self.log.read_text()[-3000:]}")
            try:
                return urllib.request.urlopen(self.endpoint, timeout=1).status == 200
            except OSError:
                return False

        wait_for(answers, timeout=30)
        self.client().create_bucket(Bucket=self.bucket)
        return self

    def client(self):
        import boto3

        return boto3.client("s3", endpoint_url=self.endpoint, region_name="us-east-1",
                            aws_access_key_id="test", aws_secret_access_key="test")

    def keys(self, prefix: str = "") -> list[str]:
        pages = self.client().get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=prefix)
        return [item["Key"] for page in pages for item in page.get("Contents", [])]

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=10)


def start_serve_llm(env: dict, log: Path, *args: str) -> tuple[str, subprocess.Popen]:
    """`manage.py serve_llm` on a free port, once it answers: (its /v1 URL, its process)."""
    port = free_port()
    with open(log, "a") as out:
        process = subprocess.Popen([sys.executable, "manage.py", "serve_llm", "--port", str(port), *args], cwd=ROOT,
                                   env=env, stdout=out, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}/v1"

    def answers() -> bool:
        if process.poll() is not None:
            raise RuntimeError(f"serve_llm exited:\n{log.read_text()[-3000:]}")
        try:
            return urllib.request.urlopen(url + "/models", timeout=2).status == 200
        except OSError:
            return False

    wait_for(answers, timeout=60)
    return url, process


class Host:
    """One machine of a deployment, as a process group of its own: `python -m webapp.launcher run
    --only <parts>` with its own data folder and model cache (no folder shared with the others)."""

    def __init__(self, name: str, parts: str, env: dict, root: Path):
        self.name, self.parts = name, parts
        self.data = root / name
        self.data.mkdir(parents=True)
        self.log = root / f"{name}.log"
        self.env = dict(env, SCRIPTORIUM_DATA_DIR=str(self.data), SCRIPTORIUM_NODE_NAME=name, PYTHONUNBUFFERED="1")
        self.process: subprocess.Popen | None = None

    def start(self) -> Host:
        with open(self.log, "a") as out:
            self.process = subprocess.Popen([sys.executable, "-m", "webapp.launcher", "run", "--only", self.parts],
                                            cwd=ROOT, env=self.env, stdout=out, stderr=subprocess.STDOUT)
        return self

    def up(self, predicate=None, timeout: float = 90) -> Host:
        """Wait until the launcher says it is up (and `predicate()`, when given, holds)."""
        def ready() -> bool:
            if self.process.poll() is not None:
                raise RuntimeError(f"{self.name} exited:\n{self.log.read_text()[-3000:]}")
            return "Scriptorium is up" in self.log.read_text() and (predicate is None or predicate())

        wait_for(ready, timeout=timeout, interval=0.5)
        return self

    def children(self) -> list[int]:
        """The processes the launcher started (it logs each one's pid)."""
        import re

        return [int(pid) for pid in re.findall(r"\(pid (\d+)\)", self.log.read_text())]

    def kill(self) -> None:
        """Pull the plug: every process of the host at once, no chance to finish anything."""
        import os
        import signal

        for pid in [*self.children(), self.process.pid]:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        self.process.wait(timeout=10)

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.kill()
