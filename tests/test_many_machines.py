"""Scriptorium on several machines with no shared folder: three "hosts" as process groups of their
own, each with its own data folder and model cache (the web tier; an `agents` worker; a `default`
and `training` worker), one PostgreSQL (or SQLite file), one Redis database of their own, and an
S3-compatible server (moto's) for every file. A person uploads a source on the web host and a
worker host extracts it; the training host trains a LoRA adapter; once activated, the agents
host downloads, verifies and serves it on its next request; a document is exported; the agents
host is killed mid-section and another agents host finishes the section."""

from __future__ import annotations

import os
import re
import time

import httpx
import pytest
import redis
from django.conf import settings
from django.test import Client

from tests.support.factories import make_document, make_project, make_user
from tests.support.processes import Host, database_url_for_subprocess, free_port, wait_for
from tests.test_training_data_and_jobs import sentences, writer_task
from webapp.documents.models import Source
from webapp.jobs.models import JobStatus, TrainingJob
from webapp.registry import services as registry
from webapp.registry.models import AdapterVersion
from webapp.runs.models import AgentTask, RunStatus, TaskStatus, WritingRun

pytestmark = pytest.mark.slow

HOSTS_REDIS_DB = 14  # the hosts' own: no worker of another test takes their tasks


@pytest.fixture
def deployment(transactional_db, s3_storage, tiny_model_dir, tmp_path):
    """The shared environment of every host, and the hosts once started (stopped at the end)."""
    url = re.sub(r"/\d+$", "", settings.REDIS_URL.rstrip("/")) + f"/{HOSTS_REDIS_DB}"
    redis.Redis.from_url(url).flushdb()
    env = {key: value for key, value in os.environ.items()
           if not key.startswith(("SCRIPTORIUM_", "PYTEST_", "MEDIA_ROOT", "REDIS_URL", "DATABASE_URL"))}
    env |= s3_storage.env | {
        "DATABASE_URL": database_url_for_subprocess(), "REDIS_URL": url, "SECRET_KEY": settings.SECRET_KEY,
        "SCRIPTORIUM_GPUS": "0", "SCRIPTORIUM_LLM_DTYPE": "float32", "SCRIPTORIUM_LLM_DEVICE": "cpu",
        "SCRIPTORIUM_WRITER_FILTERS": "none", "WRITER_STALE_S": "4", "SCRIPTORIUM_AGENTS_CONCURRENCY": "4",
        "ALLOWED_HOSTS": "127.0.0.1,localhost"}
    hosts: list[Host] = []

    def host(name: str, parts: str, **extra) -> Host:
        hosts.append(Host(name, parts, env | extra, tmp_path).start())
        return hosts[-1]

    yield host
    for each in reversed(hosts):
        each.stop()


def _session(user, web: str) -> httpx.Client:
    """A browser's session on the web host: logged in, with its CSRF cookie."""
    client = Client()
    client.force_login(user)
    session = httpx.Client(base_url=web, cookies={"sessionid": client.cookies["sessionid"].value}, timeout=30)
    session.get("/projects/").raise_for_status()
    return session


def _post(session: httpx.Client, path: str, data: dict, files: dict | None = None) -> httpx.Response:
    response = session.post(path, data={"csrfmiddlewaretoken": session.cookies["csrftoken"], **data}, files=files)
    assert response.status_code in (200, 302), (path, response.status_code, response.text[:2000])
    return response


def _answers(url: str) -> bool:
    try:
        return httpx.get(url).status_code == 200
    except httpx.HTTPError:
        return False


def _workers(session: httpx.Client, queue: str) -> list[str]:
    return session.get("/healthz").json().get("queues", {}).get(queue, {}).get("workers", [])


def test_three_hosts_share_nothing_but_the_database_redis_and_object_storage(deployment, s3_storage, tiny_model_dir,
                                                                              tmp_path):
    root = make_user("root", is_staff=True, is_superuser=True)
    project = make_project(root, name="Harbour")
    for headings in (("Morning", "Gulls", "Terns"), ("Dunes", "Pools")):  # accepted work to train the writer on
        for index, section in enumerate(make_document(project, root, sections=headings).sections.all()):
            writer_task(section, sentences(2 * index))
    base = registry.base_model_register(name="tiny", path=str(tiny_model_dir), activate=True)  # into the store

    port = free_port()
    web = deployment("web", "web", HOST="127.0.0.1", PORT=str(port))
    workers = deployment("worker", "default,training")
    agents = deployment("agents-a", "agents")
    web.up(lambda: _answers(f"http://127.0.0.1:{port}/accounts/login/"))
    browser = _session(root, f"http://127.0.0.1:{port}")
    workers.up(lambda: _workers(browser, "training") == ["training@worker"])
    agents.up(lambda: _workers(browser, "agents") == ["agents@agents-a"])

    # A source uploaded on the web host goes to object storage; a worker host extracts it.
    _post(browser, f"/projects/{project.pk}/sources/", {"title": "Terns"},
          files={"file": ("terns.txt", b"Arctic terns fly from pole to pole every year.\n" * 30, "text/plain")})
    source = Source.objects.get(project=project)
    wait_for(lambda: Source.objects.get(pk=source.pk).status in ("ready", "failed"), timeout=120)
    source.refresh_from_db()
    assert source.status == "ready", source.error
    assert "Arctic terns" in source.text and source.file.name
    assert any(key.startswith("site/media/") for key in s3_storage.keys("site/media/"))
    assert not (web.data / "media").exists()  # nothing on the web host's disk

    # The training host trains the writer's LoRA (the base model fetched from the store by its
    # checksum) and registers it: its files go to the store.
    _post(browser, "/admin/jobs/trainingjob/add/", {
        "kind": "lora", "role": "writer", "base_model": base.pk, "heldout": 0.5, "processes": 1, "nodes": 1,
        "after": "stage", "options": '{"steps": 3, "batch_size": 2, "micro_batch": 1, "lr": 0.005, "rank": 8}'})
    job = TrainingJob.objects.get()
    wait_for(lambda: TrainingJob.objects.get(pk=job.pk).finished, timeout=240)
    job.refresh_from_db()
    assert job.status == JobStatus.DONE, job.error
    adapter = AdapterVersion.objects.get()
    assert job.adapter == adapter and adapter.stored == f"versions/{adapter.sha256}"
    assert f"site/store/manifests/{adapter.sha256}.json" in s3_storage.keys("site/store/manifests/")
    assert job.output_dir.startswith(str(workers.data)) and (workers.data / "model-cache" / base.sha256).is_dir()
    assert not (agents.data / "model-cache" / adapter.sha256).exists()
    # Its log is in the store too: the web host's admin page shows it without the training host's folder.
    assert f"site/store/jobs/{job.pk}/log.txt" in s3_storage.keys(f"site/store/jobs/{job.pk}/")
    page = browser.get(f"/admin/jobs/trainingjob/{job.pk}/change/").text
    assert "exported" in page and "running" in page

    # Activated on the web host (by an override: the gate is not what this test is about); the
    # agents host's next request downloads, verifies and uses it.
    _post(browser, "/admin/registry/adapterversion/", {"action": "activate_with_override",
                                                       "_selected_action": adapter.pk, "why": "its trip is tested"})
    adapter.refresh_from_db()
    assert adapter.status == "active"
    document = make_document(project, root, sections=("Gannets", "Puffins"))
    document.auto_approve_outline = True
    document.save(update_fields=["auto_approve_outline"])
    document.sections.filter(heading="Gannets").update(word_budget=400)  # still being written when killed
    document.sections.filter(heading="Puffins").update(word_budget=120)
    _post(browser, f"/documents/{document.pk}/runs/start/", {})
    run = WritingRun.objects.get(document=document)
    gannets = document.sections.get(heading="Gannets")

    def writing() -> AgentTask | None:
        task = AgentTask.objects.filter(run=run, section=gannets, role="writer").first()
        return task if task and len(task.checkpoint_text.split()) >= 40 else None

    task = wait_for(writing, timeout=180)
    assert task.adapter_version == "writer@1"  # the activated version, on its first request
    assert (agents.data / "model-cache" / adapter.sha256).is_dir()  # downloaded and verified there
    assert (agents.data / "model-cache" / base.sha256).is_dir()

    # The agents host dies mid-section; another agents host takes the section over and finishes it.
    agents.kill()
    task.refresh_from_db()
    assert task.status == TaskStatus.RUNNING
    checkpoint = task.checkpoint_text
    time.sleep(1)
    spare = deployment("agents-b", "agents").up()
    wait_for(lambda: WritingRun.objects.get(pk=run.pk).status in (RunStatus.DONE, RunStatus.FAILED), timeout=300)
    run.refresh_from_db()
    assert run.status == RunStatus.DONE, run.error
    task.refresh_from_db()
    gannets.refresh_from_db()
    assert task.status == TaskStatus.DONE and task.attempts == 2 and task.adapter_version == "writer@1"
    assert gannets.text.startswith(checkpoint.strip()[:200])  # resumed from the checkpoint, not rewritten
    assert (spare.data / "model-cache" / adapter.sha256).is_dir()

    # An export, made on the web host from the database (no file on any machine).
    exported = browser.get(f"/documents/{document.pk}/export/md/")
    assert exported.status_code == 200 and gannets.text[:80] in exported.text
