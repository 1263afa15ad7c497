"""The training queue's tasks: a job, a machine's share of one, and the gate after one."""

from __future__ import annotations

import logging

from celery import shared_task

from webapp.jobs import gate, training
from webapp.registry import services
from webapp.registry.models import AdapterVersion, BaseModel

log = logging.getLogger(__name__)


@shared_task(name=training.RUN_TASK, acks_late=False)
def run_job(job_id: int) -> None:
    """One training job, start to end (acknowledged at once: a job whose worker dies is marked
    failed with its checkpoint, not silently run again from the start)."""
    training.run(job_id)


@shared_task(name=training.JOIN_TASK, acks_late=False)
def join_job(job_id: int, rank: int, address: str, port: int) -> None:
    """One more machine's share of a job on several (torchrun node `rank`)."""
    training.join(job_id, rank, address, port)


@shared_task(name=gate.TASK)
def gate_version(kind: str, pk: int, promote: bool = False) -> None:
    """A registered version ("adapter" or "model") measured with the promotion gate
    (webapp/jobs/gate.py), and activated on a pass if `promote` (a job set to promote, for
    one). Delivered again if its worker dies: measuring twice changes nothing."""
    version = (AdapterVersion if kind == "adapter" else BaseModel).objects.filter(pk=pk).first()
    if version is None:
        return
    try:
        gate.measure(version)  # stores what it found, or why it could not measure
    except gate.GateError as error:
        log.warning("the gate could not measure %s: %s", version, error)
        return
    log.info("%s %s", version, version.gate_summary())
    try:
        if promote and gate.promote(version):
            log.info("%s is now active", version)
    except services.RegistryError as error:
        log.warning("%s passed the gate but could not be activated: %s", version, error)
