"""Training jobs: a recipe from training/ run as a child process of a `training` worker, watched
until it ends, and its output registered (staged) only when everything checked out.

The recipe runs as `python -m training.<kind>` (or under torchrun with several processes), so a
job's logs, checkpoints and exit status are exactly what an admin gets by running it by hand.
The worker reads the recipe's metrics.jsonl for progress and the loss curve, and its
result.json when it ends. Cancelling sends SIGTERM: the recipe saves a checkpoint and stops. If
the worker itself dies, the child gets SIGTERM too (PR_SET_PDEATHSIG) and checkpoints, and the
job is marked failed once its heartbeat is stale, naming the checkpoint it left.

Every new checkpoint is copied to the models storage by its checksum as the job runs, and the
output is registered (and so stored) when it ends: a stopped job is resumed from its stored
checkpoint by a new job (`job_resume`) on any training worker, on any machine.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from datetime import timedelta
from pathlib import Path

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.files.base import ContentFile
from django.core.files.storage import storages
from django.db import transaction
from django.utils import timezone

from agents.llm.files import folder_sha256
from training import layout
from webapp.celery import enqueue
from webapp.jobs import gate, recipes, training_data
from webapp.jobs.models import AfterTraining, JobKind, JobStatus, TrainingJob
from webapp.registry import services as registry
from webapp.registry import store

log = logging.getLogger(__name__)

STALE_AFTER = timedelta(seconds=60)
LOG_FILE = "log.txt"
RUN_TASK = "training.run_job"
JOIN_TASK = "training.join_job"
ROOT = Path(__file__).resolve().parents[2]
def job_start(job: TrainingJob) -> TrainingJob:
    job.full_clean()
    job.save()
    enqueue(RUN_TASK, job.pk)
    return job


def job_resume(job: TrainingJob, user=None, options: dict | None = None) -> TrainingJob:
    """A new job that continues a stopped one from its stored checkpoint, on whichever training
    worker takes it (`options` changes some of its options, say more or fewer steps)."""
    if job.status not in (JobStatus.FAILED, JobStatus.CANCELLED) or not job.checkpoint_sha256:
        raise ValidationError(f"Job {job.pk} has no stored checkpoint to resume from "
                              f"({job.get_status_display().lower()}).")
    again = TrainingJob(kind=job.kind, role=job.role, base_model=job.base_model, options=job.options | (options or {}),
                        project=job.project, since=job.since, until=job.until, heldout=job.heldout,
                        processes=job.processes, nodes=job.nodes, after=job.after, resumed_from=job,
                        created_by=user or job.created_by)
    return job_start(again)


def job_cancel(job: TrainingJob) -> bool:
    """Ask a job to stop; a queued one never starts. False if it had already ended."""
    changed = TrainingJob.objects.filter(pk=job.pk, status=JobStatus.QUEUED).update(
        status=JobStatus.CANCELLED, finished_at=timezone.now(), error="Cancelled before it started.")
    changed += TrainingJob.objects.filter(pk=job.pk, status=JobStatus.RUNNING).update(status=JobStatus.CANCELLING)
    return bool(changed)


def reap_stale() -> int:
    """Jobs whose worker stopped answering: failed, with the checkpoint they left named."""
    count = 0
    cutoff = timezone.now() - STALE_AFTER
    for job in TrainingJob.objects.filter(status__in=[JobStatus.RUNNING, JobStatus.CANCELLING],
                                          heartbeat_at__lt=cutoff):
        checkpoint = Path(job.output_dir) / "run" / layout.CHECKPOINT
        found = bool(job.output_dir) and checkpoint.is_dir()
        if found:
            left = f"Its last checkpoint is {checkpoint}"
            left += "; resume it from the stored copy on any training worker." if job.checkpoint_sha256 else "."
        else:
            left = ("It stored a checkpoint; resume it on any training worker." if job.checkpoint_sha256
                    else "It left no checkpoint.")
        count += TrainingJob.objects.filter(pk=job.pk, heartbeat_at=job.heartbeat_at).update(
            status=JobStatus.FAILED, finished_at=timezone.now(), checkpoint=str(checkpoint) if found else "",
            error="The worker running this job stopped (killed or lost). " + left)
    return count


# --- running ----------------------------------------------------------------------------------


def _claim(job_id: int) -> TrainingJob | None:
    now = timezone.now()
    if not TrainingJob.objects.filter(pk=job_id, status=JobStatus.QUEUED).update(
            status=JobStatus.RUNNING, started_at=now, heartbeat_at=now):
        return None
    return TrainingJob.objects.select_related("base_model", "project").get(pk=job_id)


def recipe_argv(job: TrainingJob, out: Path, model: str = "", node: tuple[int, str, int] = (0, "", 0)) -> list[str]:
    """The command line a job runs: what an admin would type to run it by hand. `model` is the
    base model's folder on the machine that runs it (default: the one it was registered from);
    `node` is (this machine's rank, the first machine's address, its port) for a job on several."""
    model = model or job.base_model.path
    if job.kind == JobKind.LORA:
        args = ["--base", model, "--data", str(out / "data"), "--role", job.role]
    elif job.kind == JobKind.DISTILL:
        args = ["--teacher", model, "--data", str(out / "data"), "--briefs", str(recipes.BRIEFS),
                "--eval-text", str(recipes.EVAL_TEXT)]
    elif job.kind == JobKind.SELF_TRAIN:  # it writes its own training data (never the evaluation briefs)
        args = ["--base", model, "--role", "writer", "--briefs", str(settings.SELF_TRAIN_BRIEFS)]
    elif job.kind == JobKind.PRUNE:
        args = ["--model", model, "--calibration", str(recipes.EVAL_TEXT), "--eval-text", str(recipes.EVAL_TEXT),
                "--text", str(recipes.HEAL_TEXT)]
    else:
        args = ["--model", model, "--eval-text", str(recipes.EVAL_TEXT)]
    args += ["--out", str(out / "run")] + recipes.flags(job.options)
    if job.processes > 1 or job.nodes > 1:
        launcher = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(job.processes)]
        if job.nodes > 1:  # the first machine (rank 0, which writes the output) is the rendezvous
            rank, address, port = node
            launcher += ["--nnodes", str(job.nodes), "--node_rank", str(rank), "--master_addr", address or "<first>",
                         "--master_port", str(port or 29500)]
    else:
        launcher = [sys.executable]
    return launcher + ["-m", f"training.{job.kind}"] + args


def _export(job: TrainingJob, out: Path) -> None:
    records = training_data.pairs(role=job.role or "writer", project_id=job.project_id, since=job.since,
                                  until=job.until)
    export = training_data.split(records, job.heldout if job.kind == JobKind.LORA else 0.0)
    manifest = training_data.write(export, out / "data", role=job.role or "writer",
                                   filters={"project": job.project_id, "heldout": job.heldout})
    _log(out, f"exported {manifest['train']} training and {manifest['heldout']} held-out pairs: {manifest['labels']}")


def _log(out: Path, line: str) -> None:
    with open(out / LOG_FILE, "a") as handle:
        handle.write(f"{time.strftime('%H:%M:%S')} [job] {line}\n")


def _die_with_parent() -> None:
    """In the child: get SIGTERM when the worker dies, so it checkpoints instead of running on."""
    with contextlib.suppress(OSError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    os.setsid()


def run(job_id: int, poll_s: float = 1.0) -> None:
    reap_stale()
    job = _claim(job_id)
    if job is None:
        return
    # Named by id and start time: a database that was reset reuses ids, never these folders.
    out = Path(settings.DATA_DIR) / "training" / f"job-{job.pk}-{job.started_at:%Y%m%d-%H%M%S-%f}"
    out.mkdir(parents=True)
    TrainingJob.objects.filter(pk=job.pk).update(output_dir=str(out))
    node = (0, settings.TRAINING_ADDRESS, _free_port()) if job.nodes > 1 else (0, "", 0)
    try:
        argv = _prepare(job, out, node)
    except Exception as error:  # noqa: BLE001  (any failure before the recipe starts ends the job)
        _end(job, JobStatus.FAILED, error=f"Could not prepare the job: {error}")
        return
    for rank in range(1, job.nodes):  # the other machines join this one's rendezvous
        enqueue(JOIN_TASK, job.pk, rank, node[1], node[2])
    if job.nodes > 1:
        _log(out, f"waiting for {job.nodes - 1} more training worker(s) to join at {node[1]}:{node[2]}")
    process = _spawn(argv, out)
    metrics_file, seen = out / "run" / layout.METRICS, 0
    signalled, stored, logged = False, 0.0, time.monotonic()
    while True:
        code = process.poll()
        seen = _read_progress(job, metrics_file, seen)
        stored = _store_checkpoint(job, out, stored)
        if time.monotonic() - logged >= LOG_STORE_EVERY_S:
            logged = _store_files(job, out)
        status = TrainingJob.objects.filter(pk=job.pk).values_list("status", flat=True).first()
        if status == JobStatus.CANCELLING and not signalled and code is None:
            os.killpg(process.pid, signal.SIGTERM)  # every rank under torchrun
            signalled = True
        if code is not None:
            break
        TrainingJob.objects.filter(pk=job.pk).update(heartbeat_at=timezone.now())
        time.sleep(poll_s)
    if code != 0:
        _store_checkpoint(job, out, stored)  # the one it wrote as it stopped
    _finish(job, out, code, cancelled=signalled)
    _store_files(job, out)


STORED_FILES = (LOG_FILE, "run/metrics.jsonl", "run/result.json")
LOG_STORE_EVERY_S = 30.0


def _store_files(job: TrainingJob, out: Path) -> float:
    """The job's log, metrics and result into the models storage (`jobs/<id>/`), so the admin
    console shows them from any machine; returns when."""
    storage = storages["models"]
    for name in STORED_FILES:
        path, key = out / name, f"jobs/{job.pk}/{Path(name).name}"
        if not path.is_file():
            continue
        try:
            storage.delete(key)
            storage.save(key, ContentFile(path.read_bytes()))
        except Exception:  # noqa: BLE001  (the store is away: the next look stores them)
            log.warning("job %s: could not store %s", job.pk, name, exc_info=True)
    return time.monotonic()


def job_log(job: TrainingJob, tail: int = 8000) -> str:
    """The end of a job's log: from its folder on this machine, else from the models storage."""
    path = Path(job.output_dir or "/nonexistent") / LOG_FILE
    try:
        if path.is_file():
            return path.read_text(errors="replace")[-tail:]
        with storages["models"].open(f"jobs/{job.pk}/{LOG_FILE}", "rb") as handle:
            return handle.read().decode(errors="replace")[-tail:]
    except Exception:  # noqa: BLE001  (no log yet, or the store is away)
        return ""


def join(job_id: int, rank: int, address: str, port: int, poll_s: float = 1.0) -> None:
    """This machine's share of a job on several: the same recipe as node `rank`, joining the first
    machine's rendezvous. The first machine watches, stores and registers; this one stops when the
    job ends or is cancelled (or when the others stop, which ends torchrun here too)."""
    job = TrainingJob.objects.select_related("base_model", "project").filter(pk=job_id).first()
    if job is None or job.finished:
        return
    out = Path(settings.DATA_DIR) / "training" / f"job-{job.pk}-node{rank}-{timezone.now():%Y%m%d-%H%M%S-%f}"
    out.mkdir(parents=True)
    try:
        argv = _prepare(job, out, (rank, address, port))
    except Exception:  # noqa: BLE001  (the first machine's torchrun times out waiting, and says so)
        log.exception("job %s: node %d could not prepare", job_id, rank)
        return
    process = _spawn(argv, out)
    signalled = False
    while process.poll() is None:
        status = TrainingJob.objects.filter(pk=job.pk).values_list("status", flat=True).first()
        if status != JobStatus.RUNNING and not signalled:
            os.killpg(process.pid, signal.SIGTERM)
            signalled = True
        time.sleep(poll_s)
    _log(out, f"node {rank} ended with status {process.returncode}")


def _prepare(job: TrainingJob, out: Path, node: tuple[int, str, int]) -> list[str]:
    """The job's data on this machine (exported from the database), its base model (fetched here
    by checksum if need be), the checkpoint it resumes from (every node resumes from the same
    one) and the command line."""
    if job.kind in (JobKind.LORA, JobKind.DISTILL):
        _export(job, out)
    argv = recipe_argv(job, out, registry.local_path(job.base_model), node)
    if job.resumed_from is not None:
        _fetch_checkpoint(job.resumed_from, out)
        argv.append("--resume")
    return argv


def _spawn(argv: list[str], out: Path) -> subprocess.Popen:
    _log(out, "running " + " ".join(argv))
    env = dict(os.environ, PYTHONUNBUFFERED="1", PYTHONPATH=str(ROOT))
    with open(out / LOG_FILE, "a") as log_file:
        return subprocess.Popen(argv, cwd=ROOT, env=env, stdout=log_file, stderr=subprocess.STDOUT,
                                preexec_fn=_die_with_parent)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("", 0))
        return sock.getsockname()[1]


def _store_checkpoint(job: TrainingJob, out: Path, stored: float) -> float:
    """Copy the recipe's newest checkpoint to the models storage (by its checksum) when it has
    changed since `stored` (its trainer.json's time); return the time of the one stored now."""
    checkpoint = out / "run" / layout.CHECKPOINT
    try:
        written = (checkpoint / "trainer.json").stat().st_mtime
    except OSError:
        return stored
    if written == stored:
        return stored
    snapshot = out / "checkpoint.storing"
    shutil.rmtree(snapshot, ignore_errors=True)
    try:
        shutil.copytree(checkpoint, snapshot)  # the recipe swaps a new one in whole: copy, then store the copy
        sha256 = folder_sha256(snapshot)
        store.publish(snapshot, sha256)
    except (OSError, shutil.Error):
        return stored  # swapped while it was copied: the next poll stores the new one
    except Exception:  # noqa: BLE001  (the store is down: training goes on, the next poll tries again)
        log.warning("job %s: could not store its checkpoint", job.pk, exc_info=True)
        return stored
    finally:
        shutil.rmtree(snapshot, ignore_errors=True)
    previous = TrainingJob.objects.filter(pk=job.pk).values_list("checkpoint_sha256", flat=True).first()
    TrainingJob.objects.filter(pk=job.pk).update(checkpoint_sha256=sha256)
    if previous and previous != sha256:
        store.remove(previous)
    _log(out, f"checkpoint stored ({sha256[:12]}…)")
    return written


def _fetch_checkpoint(stopped: TrainingJob, out: Path) -> None:
    """Put the stopped job's stored checkpoint where the recipe's --resume looks for it."""
    folder = store.local_folder(stopped.checkpoint_sha256, store.key_for(stopped.checkpoint_sha256))
    shutil.copytree(folder, out / "run" / layout.CHECKPOINT)
    _log(out, f"resuming job {stopped.pk} from its stored checkpoint ({stopped.checkpoint_sha256[:12]}…)")


def _read_progress(job: TrainingJob, metrics_file: Path, seen: int) -> int:
    if not metrics_file.is_file():
        return seen
    lines = metrics_file.read_text().splitlines()
    new = [json.loads(line) for line in lines[seen:] if line.strip()]
    steps = [m for m in new if "step" in m]
    ranks = {m["event"]: {k: v for k, v in m.items() if k not in ("event", "time")} for m in new
             if m.get("event") in ("memory", "speed")}
    if ranks:  # each rank's bytes held, tokens a second and peak memory (training/common.py), for the job page
        job.metrics = {**(job.metrics or {}), "ranks": {**(job.metrics or {}).get("ranks", {}), **ranks}}
        TrainingJob.objects.filter(pk=job.pk).update(metrics=job.metrics)
    if steps:
        job.losses = (job.losses or []) + [m["loss"] for m in steps]
        job.step, job.total_steps = steps[-1]["step"], steps[-1]["total_steps"]
        TrainingJob.objects.filter(pk=job.pk).update(losses=job.losses, step=job.step, total_steps=job.total_steps,
                                                     heartbeat_at=timezone.now())
    return len(lines)


def _finish(job: TrainingJob, out: Path, code: int, cancelled: bool = False) -> None:
    result_file = out / "run" / layout.RESULT
    result = json.loads(result_file.read_text()) if result_file.is_file() else {}
    checkpoint = out / "run" / layout.CHECKPOINT
    checkpoint_path = str(checkpoint) if checkpoint.is_dir() else ""
    if result.get("status") == "done" and code == 0:
        try:
            _register(job, result)
        except (registry.RegistryError, ValidationError, OSError, KeyError) as error:
            _end(job, JobStatus.FAILED, metrics=result.get("metrics", {}), checkpoint=checkpoint_path,
                 error=f"The recipe finished, but its output was not registered: {error}")
        return
    # Cancelled before the recipe had set up its signal handlers, it dies of SIGTERM: still cancelled.
    if result.get("status") == "cancelled" or code == layout.EXIT_CANCELLED or cancelled:
        _end(job, JobStatus.CANCELLED, checkpoint=checkpoint_path,
             error="Cancelled" + (f"; the checkpoint is {checkpoint_path}" if checkpoint_path else "") + ".")
        return
    tail = (out / LOG_FILE).read_text()[-1500:] if (out / LOG_FILE).is_file() else ""
    _end(job, JobStatus.FAILED, checkpoint=checkpoint_path,
         error=result.get("error") or f"The recipe exited with status {code}.\n{tail}")


@transaction.atomic
def _register(job: TrainingJob, result: dict) -> None:
    """All or nothing: the version and the job's link to it are saved together."""
    metrics, notes = result.get("metrics", {}), f"Training job {job.pk} ({job.kind})."
    if result.get("kind") == "adapter":  # adapter_register checks the base model it was trained on
        version = registry.adapter_register(role=job.role, path=result["output"], base_model=job.base_model,
                                            metrics=metrics, notes=notes)
        _end(job, JobStatus.DONE, metrics=metrics, adapter=version)
    else:
        version = registry.base_model_register(name=f"{job.base_model.name}-{job.kind}-{job.pk}"[:100],
                                               path=result["output"], notes=notes)
        version.metrics = metrics
        version.save(update_fields=["metrics"])
        _end(job, JobStatus.DONE, metrics=metrics, produced_model=version)
    if job.after != AfterTraining.STAGE:  # measured on a training worker once this is committed
        enqueue(gate.TASK, "adapter" if result.get("kind") == "adapter" else "model", version.pk,
                job.after == AfterTraining.PROMOTE)


def _end(job: TrainingJob, status: str, **fields) -> None:
    if "metrics" in fields:  # the recipe's result, beside the per-rank figures read while it ran
        ranks = (TrainingJob.objects.filter(pk=job.pk).values_list("metrics", flat=True).first() or {}).get("ranks")
        fields["metrics"] = {**fields["metrics"], **({"ranks": ranks} if ranks else {})}
    TrainingJob.objects.filter(pk=job.pk).update(status=status, finished_at=timezone.now(), **fields)
