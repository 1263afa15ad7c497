"""Training data exported from the product, and training jobs run by a real `training` worker:
a LoRA adapter trained from exported sections, registered, activated and used by the engine for
the role's next request; cancelled, empty and mismatched jobs end clearly, registering nothing."""

from __future__ import annotations

import datetime as dt
import json
import os
import shutil
from pathlib import Path

import pytest
from django.core.exceptions import ValidationError
from django.core.management import CommandError, call_command
from django.utils import timezone

from agents.llm.files import folder_sha256
from agents.outline import Brief
from agents.roles import section_writer
from tests.support.factories import PASSWORD, make_document, make_project, make_user, vouched
from tests.support.processes import wait_for
from webapp.jobs import training, training_data
from webapp.jobs.models import AfterTraining, JobKind, JobStatus, TrainingJob
from webapp.registry import services as registry
from webapp.registry.models import AdapterVersion, BaseModel
from webapp.runs.models import AgentTask, RunStatus, TaskStatus, WritingRun

HARBOUR = (Path(__file__).resolve().parent.parent / "training" / "data" / "heldout.txt").read_text().split(". ")


def writer_task(section, agent_text: str, *, final: str | None = None, status=TaskStatus.DONE, when=None):
    """A finished writer task as a run leaves it: its prompt, its text, and the section as people left it."""
    run = WritingRun.objects.create(document=section.document, status=RunStatus.DONE)
    brief = Brief(topic=section.document.topic, target_words=900, audience="walkers")
    work = section_writer.SectionTask(key="1", heading=section.heading, words=80, goal=section.goal, key_points=[])
    task = AgentTask.objects.create(run=run, role=section_writer.ROLE, section=section, status=status,
                                    checkpoint_text=agent_text, finished_at=when or timezone.now(),
                                    prompt=section_writer.messages(brief, "1. " + section.heading, work))
    section.text = agent_text if final is None else final
    section.save(update_fields=["text"])
    return task


def export(*args) -> None:
    call_command("export_training_data", "--role", "writer", *map(str, args))


def sentences(start: int, count: int = 2) -> str:
    return ". ".join(HARBOUR[start:start + count]).strip() + "."


@pytest.fixture
def accepted_work(owner):
    """Two documents in one project, one in another: accepted, lightly edited, rewritten,
    regenerated and emptied sections."""
    project = make_project(owner)
    first = make_document(project, owner, sections=("Morning", "Gulls", "Terns", "Waders"))
    second = make_document(project, owner, sections=("Dunes", "Rock pools"))
    elsewhere = make_document(make_project(owner, name="Elsewhere"), owner, sections=("Cliffs",))
    morning, gulls, terns, waders = first.sections.order_by("order")
    dunes, pools = second.sections.order_by("order")
    tasks = {
        "kept": writer_task(morning, sentences(0)),
        "edited": writer_task(gulls, sentences(2, 3), final=sentences(2, 3).replace("A walker", "A patient walker")),
        "rewritten": writer_task(terns, sentences(5), final="People wrote this paragraph about terns themselves."),
        "emptied": writer_task(waders, sentences(7), final=""),
        "regenerated": writer_task(dunes, sentences(9), when=timezone.now() - dt.timedelta(days=3)),
        "second_try": writer_task(dunes, sentences(11)),
        "pools": writer_task(pools, sentences(13)),
        "elsewhere": writer_task(elsewhere.sections.get(), sentences(15)),
    }
    writer_task(pools, "half a sente", final=sentences(13), status=TaskStatus.CANCELLED)  # never exported
    return project, tasks


def test_export_labels_every_pair_and_holds_out_whole_documents(accepted_work, tmp_path):
    project, tasks = accepted_work
    export("--out", tmp_path, "--heldout", 0.5, "--project", project.pk)
    train = [json.loads(line) for line in (tmp_path / "train.jsonl").read_text().splitlines()]
    heldout = [json.loads(line) for line in (tmp_path / "heldout.jsonl").read_text().splitlines()]
    records = {r["task"]: r for r in train + heldout}
    label = {name: records[task.pk]["label"] for name, task in tasks.items() if task.pk in records}
    assert label == {"kept": "accepted", "edited": "accepted", "rewritten": "rewritten", "emptied": "rejected",
                     "regenerated": "rejected", "second_try": "accepted", "pools": "accepted"}
    assert tasks["elsewhere"].pk not in records  # another project
    edited = records[tasks["edited"].pk]
    assert "A patient walker" in edited["completion"] and 0.6 <= edited["similarity"] < 1
    assert records[tasks["rewritten"].pk]["completion"].startswith("People wrote")
    assert records[tasks["regenerated"].pk]["reason"] == "regenerated later"
    assert records[tasks["regenerated"].pk]["completion"] == sentences(9)  # the agent's text, marked rejected
    prompt = records[tasks["kept"].pk]["prompt"]
    assert prompt == AgentTask.objects.get(pk=tasks["kept"].pk).prompt and prompt[0]["role"] == "system"
    assert {r["document"] for r in train}.isdisjoint({r["document"] for r in heldout})
    assert train and heldout
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    assert manifest["labels"] == {"accepted": 4, "rewritten": 1, "rejected": 2}
    assert manifest["role"] == "writer" and manifest["filters"]["project"] == project.pk


def test_export_filters_by_date_and_rejects_bad_options(accepted_work, tmp_path):
    today = timezone.now().date()
    export("--out", tmp_path / "old", "--heldout", 0, "--until", today - dt.timedelta(days=1))
    old = (tmp_path / "old" / "train.jsonl").read_text().splitlines()
    assert len(old) == 1 and json.loads(old[0])["label"] == "rejected"
    export("--out", tmp_path / "recent", "--heldout", 0, "--since", today)
    assert len((tmp_path / "recent" / "train.jsonl").read_text().splitlines()) == 7
    with pytest.raises(CommandError, match="invalid choice"):
        call_command("export_training_data", "--role", "reviewer", "--out", str(tmp_path / "x"))
    with pytest.raises(CommandError, match="not a date"):
        export("--out", tmp_path / "x", "--since", "last week")
    with pytest.raises(CommandError, match="no single project"):
        export("--out", tmp_path / "x", "--project", "nope")
    with pytest.raises(training_data.ExportError, match="below 1"):
        training_data.split([], 1.0)


def test_job_options_are_checked_before_anything_is_queued(db, tiny_model_dir):
    model = registry.base_model_register(name="tiny", path=str(tiny_model_dir))
    job = TrainingJob(kind=JobKind.LORA, role="writer", base_model=model, options={"stepz": 3})
    with pytest.raises(ValidationError, match="not an option of lora"):
        job.full_clean()
    job.options = {"steps": "many"}
    with pytest.raises(ValidationError, match="must be a int"):
        job.full_clean()
    job.options, job.role = {"steps": 3, "lr": 1}, "reviewer"
    with pytest.raises(ValidationError, match="LoRA jobs train a role"):
        job.full_clean()
    job.role = "writer"
    job.full_clean()


def test_a_stale_job_is_failed_and_names_its_checkpoint(db, tiny_model_dir, tmp_path):
    model = registry.base_model_register(name="tiny", path=str(tiny_model_dir))
    (tmp_path / "run" / "checkpoint").mkdir(parents=True)
    job = TrainingJob.objects.create(kind=JobKind.LORA, role="writer", base_model=model, status=JobStatus.RUNNING,
                                     output_dir=str(tmp_path), heartbeat_at=timezone.now() - dt.timedelta(minutes=5))
    fresh = TrainingJob.objects.create(kind=JobKind.LORA, role="writer", base_model=model, status=JobStatus.RUNNING,
                                       heartbeat_at=timezone.now())
    assert training.reap_stale() == 1
    job.refresh_from_db()
    assert job.status == JobStatus.FAILED and job.checkpoint == str(tmp_path / "run" / "checkpoint")
    assert "stopped (killed or lost)" in job.error and job.checkpoint in job.error
    fresh.refresh_from_db()
    assert fresh.status == JobStatus.RUNNING


def test_a_role_can_be_served_by_another_model(db, tiny_model_dir, tiny_adapters, settings):
    from webapp import llm

    settings.SCRIPTORIUM_MODEL = str(tiny_model_dir)
    settings.SCRIPTORIUM_LLM_DTYPE = "float32"
    student = registry.base_model_register(name="student", path=str(tiny_model_dir))
    registry.base_model_assign_roles(model=student, roles=["reviewer"])
    assert llm.get_engine("reviewer").base_model_name == "student"
    # Other roles get the process's default engine (whichever model an earlier test made it).
    assert llm.get_engine("writer") is llm.get_engine() is not llm.get_engine("reviewer")
    # A role whose active adapter was trained on another model cannot be handed to the student.
    base = registry.base_model_register(name=tiny_model_dir.name, path=str(tiny_model_dir))
    registry.adapter_register(role="writer", path=str(tiny_adapters["writer"]), base_model=base, activate=True,
                              override=vouched())
    with pytest.raises(ValidationError, match="deactivate it"):
        registry.base_model_assign_roles(model=student, roles=["reviewer", "writer"])
    adapter = registry.adapter_register(role="reviewer", path=str(tiny_adapters["writer"]), base_model=base)
    with pytest.raises(registry.RegistryError, match="is served by student"):
        registry.adapter_activate(adapter=adapter, override=vouched())


# --- jobs on a real worker -------------------------------------------------------------------


@pytest.fixture
def tiny_base(transactional_db, tiny_model_dir):
    # Named like the folder, which is what the worker's engine calls the model it serves.
    return registry.base_model_register(name=tiny_model_dir.name, path=str(tiny_model_dir))


def run_job(base, **fields) -> TrainingJob:
    """A LoRA job for the writer, its output staged (unless `after` says otherwise)."""
    job = TrainingJob(kind=JobKind.LORA, role="writer", base_model=base, heldout=0.5,
                      **{"after": AfterTraining.STAGE} | fields)
    training.job_start(job)
    return job


def wait_job(job: TrainingJob, statuses, timeout: float = 240) -> TrainingJob:
    wait_for(lambda: TrainingJob.objects.get(pk=job.pk).status in statuses, timeout=timeout)
    job.refresh_from_db()
    return job


def generate(role: str) -> dict:
    from webapp.runs.tasks import generate as generate_task

    messages = [{"role": "user", "content": "Write about the harbour at dawn."}]
    return generate_task.delay(role, messages, max_new_tokens=12).get(timeout=120)


@pytest.mark.slow
def test_lora_job_trains_registers_and_the_engine_uses_it_once_active(celery_worker_process, tiny_base, owner):
    project = make_project(owner)
    for start, headings in ((0, ("Morning", "Gulls", "Terns")), (6, ("Dunes", "Pools"))):
        document = make_document(project, owner, sections=headings)
        for index, section in enumerate(document.sections.order_by("order")):
            writer_task(section, sentences(start + 2 * index))
    before = generate("writer")
    assert before["adapter"] is None
    job = run_job(tiny_base, options={"steps": 4, "batch_size": 2, "micro_batch": 1, "lr": 0.005, "rank": 8},
                  after=AfterTraining.MEASURE)
    job = wait_job(job, {JobStatus.DONE, JobStatus.FAILED})
    assert job.status == JobStatus.DONE, job.error
    assert job.step == job.total_steps == 4 and len(job.losses) == 4
    assert job.metrics["eval_loss_after"] < job.metrics["eval_loss_before"]
    adapter = job.adapter
    assert adapter.status == "staged" and adapter.role == "writer" and adapter.version == 1
    assert adapter.metrics["perplexity_after"] == job.metrics["perplexity_after"]
    assert job.metrics["train_pairs"] + job.metrics["heldout_pairs"] == 5
    assert "exported" in (Path(job.output_dir) / "log.txt").read_text()
    # The promotion gate measures it on a training worker, against the base model without an
    # adapter, and leaves it staged (the job measures; it was not set to promote).
    wait_for(lambda: AdapterVersion.objects.get(pk=job.adapter_id).gate, timeout=120)
    adapter.refresh_from_db()
    assert adapter.gate["active"]["version"] == f"{tiny_base.name} without an adapter"
    assert adapter.gate["candidate"]["on"]["words"] > 0 and adapter.status == "staged"
    assert generate("writer")["adapter"] is None  # staged: nothing changes yet
    registry.adapter_activate(adapter=adapter, override=vouched())
    after = generate("writer")
    assert after["adapter"] == "writer@1"
    assert after["text"] != before["text"]
    assert generate("reviewer")["adapter"] is None  # other roles are untouched


@pytest.mark.slow
def test_cancelled_empty_and_mismatched_jobs_register_nothing(celery_worker_process, tiny_base, owner):
    empty = wait_job(run_job(tiny_base, options={"steps": 2}), {JobStatus.FAILED, JobStatus.DONE})
    assert empty.status == JobStatus.FAILED and "only 0 training example(s)" in empty.error

    project = make_project(owner)
    for headings in (("Morning", "Gulls", "Terns"), ("Dunes", "Pools")):
        for index, section in enumerate(make_document(project, owner, sections=headings).sections.all()):
            writer_task(section, sentences(2 * index))
    long = run_job(tiny_base, options={"steps": 5000, "batch_size": 2, "micro_batch": 1, "save_every": 1000})
    wait_for(lambda: TrainingJob.objects.get(pk=long.pk).step >= 2, timeout=180)
    assert training.job_cancel(long)
    long = wait_job(long, {JobStatus.CANCELLED, JobStatus.FAILED, JobStatus.DONE})
    assert long.status == JobStatus.CANCELLED, long.error
    assert long.checkpoint and (Path(long.checkpoint) / "adapter_model.safetensors").is_file()
    saved = json.loads((Path(long.checkpoint) / "trainer.json").read_text())
    assert 2 <= saved["step"] < 5000
    assert not training.job_cancel(long)  # it has ended

    # The registered checksum no longer matches the folder the adapter was trained on.
    BaseModel.objects.filter(pk=tiny_base.pk).update(sha256="0" * 64)
    mismatch = wait_job(run_job(BaseModel.objects.get(pk=tiny_base.pk), options={"steps": 1, "batch_size": 2}),
                        {JobStatus.FAILED, JobStatus.DONE})
    assert mismatch.status == JobStatus.FAILED and "was not registered" in mismatch.error
    assert "checksum differs" in mismatch.error
    assert AdapterVersion.objects.count() == 0


@pytest.mark.slow
def test_a_stopped_job_resumes_from_its_stored_checkpoint_without_its_folder(celery_worker_process, tiny_base,
                                                                           owner):
    """Checkpoints go to the models storage as the job runs: a new job on any machine (here: with
    the first job's folder gone) continues from the step it stopped at."""
    project = make_project(owner)
    for headings in (("Morning", "Gulls", "Terns"), ("Dunes", "Pools")):
        for index, section in enumerate(make_document(project, owner, sections=headings).sections.all()):
            writer_task(section, sentences(2 * index))
    first = run_job(tiny_base, options={"steps": 5000, "batch_size": 2, "micro_batch": 1, "save_every": 2})
    wait_for(lambda: TrainingJob.objects.get(pk=first.pk).checkpoint_sha256, timeout=180)
    assert training.job_cancel(first)
    first = wait_job(first, {JobStatus.CANCELLED, JobStatus.FAILED, JobStatus.DONE})
    assert first.status == JobStatus.CANCELLED, first.error
    stopped_at = json.loads((Path(first.checkpoint) / "trainer.json").read_text())["step"]
    assert folder_sha256(first.checkpoint) == first.checkpoint_sha256  # the last one it wrote is the stored one
    shutil.rmtree(first.output_dir)  # another machine has none of it

    again = training.job_resume(first, options={"steps": stopped_at + 3})
    again = wait_job(again, {JobStatus.DONE, JobStatus.FAILED, JobStatus.CANCELLED})
    assert again.status == JobStatus.DONE, again.error
    assert again.resumed_from == first and again.step == stopped_at + 3 and len(again.losses) == 3
    assert f"resumed from step {stopped_at}" in (Path(again.output_dir) / "log.txt").read_text()
    assert again.adapter is not None and again.adapter.stored
    with pytest.raises(ValidationError, match="no stored checkpoint"):
        training.job_resume(again)


@pytest.mark.slow
def test_a_job_on_two_machines_follows_the_one_machine_loss_curve(celery_worker_process, tiny_base, owner):
    """nodes=2: the worker that takes the job is torchrun's first node and queues the second on
    another training worker (here a second thread of the same worker), which joins its rendezvous.
    Data parallel, then a pipeline (a decoder layer on each machine)."""
    project = make_project(owner)
    for headings in (("Morning", "Gulls", "Terns"), ("Dunes", "Pools")):
        for index, section in enumerate(make_document(project, owner, sections=headings).sections.all()):
            writer_task(section, sentences(2 * index))
    options = {"steps": 3, "batch_size": 2, "micro_batch": 1, "lr": 0.005, "rank": 8, "max_length": 128}
    one = wait_job(run_job(tiny_base, options=options), {JobStatus.DONE, JobStatus.FAILED})
    two = wait_job(run_job(tiny_base, options=options, nodes=2), {JobStatus.DONE, JobStatus.FAILED})
    piped = wait_job(run_job(tiny_base, options=options | {"strategy": "pipeline"}, nodes=2),
                     {JobStatus.DONE, JobStatus.FAILED})
    assert one.status == two.status == piped.status == JobStatus.DONE, (one.error, two.error, piped.error)
    assert two.losses == pytest.approx(one.losses, rel=1e-4)
    assert piped.losses == pytest.approx(one.losses, rel=1e-4)
    assert piped.adapter is not None and piped.adapter.stored
    assert piped.metrics["ranks"]["memory"]["decoder_layers"] == [1, 1]
    log = (Path(two.output_dir) / "log.txt").read_text()
    assert "--nnodes 2 --node_rank 0 --master_addr 127.0.0.1" in log and "waiting for 1 more" in log
    # The second node ran rank 1 (the first could not have trained without it); it is stopped, if
    # its torchrun still waits at the exit barrier, once the job is done.
    joined = next(Path(two.output_dir).parent.glob(f"job-{two.pk}-node1-*")) / "log.txt"
    assert "--nnodes 2 --node_rank 1 --master_addr 127.0.0.1" in joined.read_text()
    wait_for(lambda: "node 1 ended" in joined.read_text(), timeout=60)  # its task ends just after the job
    assert two.adapter is not None and two.adapter.stored
    # The job page's per-process figures: each rank's share of the weights, tokens a second, peak memory.
    ranks = two.metrics["ranks"]
    assert len(ranks["memory"]["param_bytes"]) == len(ranks["speed"]["tokens_per_s"]) == 2
    assert all(rate > 0 for rate in ranks["speed"]["tokens_per_s"]) and two.metrics["steps"] == 3
    from webapp.jobs.admin import TrainingJobAdmin

    shown = TrainingJobAdmin.per_rank(None, two)
    assert shown.count("<tr>") == 3 and "tokens/s" in shown and "strategy: ddp" in shown


def test_the_admin_console_launches_jobs_and_shows_progress_curve_and_log(client, db, tiny_model_dir, tmp_path,
                                                                          django_capture_on_commit_callbacks,
                                                                          monkeypatch):
    from django.urls import reverse


    make_user("root", is_staff=True, is_superuser=True)
    client.login(username="root", password=PASSWORD)
    model = registry.base_model_register(name="tiny", path=str(tiny_model_dir))
    queued = []
    monkeypatch.setattr("webapp.jobs.training.enqueue", lambda name, job_id: queued.append(job_id))
    form = {"kind": "lora", "role": "writer", "base_model": model.pk, "options": '{"stepz": 1}', "heldout": 0.2,
            "processes": 1, "nodes": 1, "after": "measure"}
    response = client.post(reverse("admin:jobs_trainingjob_add"), form)
    assert response.status_code == 200 and "not an option of lora" in response.content.decode()
    with django_capture_on_commit_callbacks(execute=True):
        response = client.post(reverse("admin:jobs_trainingjob_add"), {**form, "options": '{"steps": 3}'})
    assert response.status_code == 302
    job = TrainingJob.objects.get()
    assert queued == [job.pk] and job.status == JobStatus.QUEUED and job.created_by.username == "root"

    (tmp_path / "log.txt").write_text("step 1 <script>alert(1)</script>\n")
    TrainingJob.objects.filter(pk=job.pk).update(status=JobStatus.RUNNING, step=2, total_steps=3,
                                                 losses=[3.5, 3.1], output_dir=str(tmp_path),
                                                 heartbeat_at=timezone.now())
    page = client.get(reverse("admin:jobs_trainingjob_change", args=[job.pk])).content.decode()
    assert '<progress max="3" value="2">' in page and "<polyline points=" in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page and "<script>alert(1)" not in page
    assert 'http-equiv="refresh"' in page  # it follows the job until it ends
    assert "training.lora" in page  # the command line, to run it by hand
    listing = client.get(reverse("admin:jobs_trainingjob_changelist")).content.decode()
    assert "2/3" in listing
    client.post(reverse("admin:jobs_trainingjob_changelist"),
                {"action": "cancel", "_selected_action": [job.pk]})
    assert TrainingJob.objects.get(pk=job.pk).status == JobStatus.CANCELLING


@pytest.mark.slow
def test_prune_and_quantize_jobs_register_staged_models(celery_worker_process, tiny_base):
    """(Distillation jobs take the same path; its recipe has its own test.)"""
    options = {JobKind.PRUNE: {"drop_layers": 1, "mlp_keep": 0.5}, JobKind.QUANTIZE: {}}
    for kind, chosen in options.items():
        job = TrainingJob(kind=kind, base_model=tiny_base, options=chosen, after=AfterTraining.STAGE)
        training.job_start(job)
        job = wait_job(job, {JobStatus.DONE, JobStatus.FAILED})
        assert job.status == JobStatus.DONE, job.error
        model = job.produced_model
        assert model.status == "staged" and model.metrics == job.metrics and model.name.endswith(f"-{kind}-{job.pk}")
        assert Path(model.path).is_dir() and model.sha256
    pruned = TrainingJob.objects.get(kind=JobKind.PRUNE).produced_model
    assert pruned.metrics["layers"] == 1 and pruned.metrics["parameters_after"] < pruned.metrics["parameters_before"]


@pytest.mark.slow
def test_a_job_whose_worker_is_killed_checkpoints_and_ends_failed(tiny_base, owner, tmp_path, monkeypatch):
    """SIGKILL the training worker mid-job: the recipe (its child) gets SIGTERM, checkpoints and
    stops rather than running on unwatched; the job is failed once its heartbeat is stale,
    naming that checkpoint; nothing is registered."""
    import signal
    import subprocess
    import sys
    import uuid

    from django.conf import settings

    from tests.support.processes import ROOT, database_url_for_subprocess
    from webapp.jobs.tasks import run_job as run_job_task

    project = make_project(owner)
    for headings in (("Morning", "Gulls", "Terns"), ("Dunes", "Pools")):
        for index, section in enumerate(make_document(project, owner, sections=headings).sections.all()):
            writer_task(section, sentences(2 * index))
    queue = f"training-{uuid.uuid4().hex[:6]}"  # our own queue: the session's worker never sees the job
    env = dict(os.environ, DATABASE_URL=database_url_for_subprocess(), SCRIPTORIUM_DATA_DIR=str(settings.DATA_DIR),
               PYTHONUNBUFFERED="1")
    with open(tmp_path / "worker.log", "w") as log:
        worker = subprocess.Popen([sys.executable, "-m", "celery", "-A", "webapp", "worker", "-Q", queue, "--pool",
                                   "solo", "-n", f"{queue}@%h"], cwd=ROOT, env=env, stdout=log,
                                  stderr=subprocess.STDOUT)
    try:
        job = TrainingJob(kind=JobKind.LORA, role="writer", base_model=tiny_base, heldout=0.5,
                          options={"steps": 5000, "batch_size": 2, "micro_batch": 1, "save_every": 1000})
        job.full_clean()
        job.save()
        run_job_task.apply_async((job.pk,), queue=queue)
        wait_for(lambda: TrainingJob.objects.get(pk=job.pk).step >= 2, timeout=180)
        worker.send_signal(signal.SIGKILL)
        worker.wait(timeout=30)
    finally:
        if worker.poll() is None:
            worker.kill()
    job.refresh_from_db()
    run_dir = Path(job.output_dir) / "run"
    wait_for(lambda: (run_dir / "result.json").is_file(), timeout=60)
    assert json.loads((run_dir / "result.json").read_text())["status"] == "cancelled"
    saved = json.loads((run_dir / "checkpoint" / "trainer.json").read_text())
    assert 2 <= saved["step"] < 5000
    assert job.status == JobStatus.RUNNING  # nobody is left to say otherwise, until the heartbeat is stale
    monkeypatch.setattr(training, "STALE_AFTER", dt.timedelta(seconds=1))
    wait_for(lambda: training.reap_stale() == 1, timeout=30)
    job.refresh_from_db()
    assert job.status == JobStatus.FAILED and job.checkpoint == str(run_dir / "checkpoint")
    assert AdapterVersion.objects.count() == 0


def test_a_recipe_killed_by_a_cancel_before_it_could_checkpoint_is_cancelled_not_failed(db, tiny_model_dir,
                                                                                        tmp_path):
    model = registry.base_model_register(name="tiny", path=str(tiny_model_dir))
    job = TrainingJob.objects.create(kind=JobKind.LORA, role="writer", base_model=model,
                                     status=JobStatus.CANCELLING, output_dir=str(tmp_path))
    training._finish(job, tmp_path, -15, cancelled=True)  # SIGTERM before its handlers were installed
    job.refresh_from_db()
    assert job.status == JobStatus.CANCELLED and job.checkpoint == ""
    other = TrainingJob.objects.create(kind=JobKind.LORA, role="writer", base_model=model,
                                       status=JobStatus.RUNNING, output_dir=str(tmp_path))
    training._finish(other, tmp_path, -9)
    other.refresh_from_db()
    assert other.status == JobStatus.FAILED and "exited with status -9" in other.error
