"""The promotion gate for a registered version: it writes held-out briefs (the test half of
training/data/briefs.json, which no recipe trains on and no rule is tuned for) with the candidate
and with the version it would replace, and stores the comparison with the candidate
(agents/gate.py has the measures and the rule). Activation needs a pass or a staff override
(services.adapter_activate); `promote` activates on a pass only."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import TYPE_CHECKING

from django.conf import settings
from django.utils import timezone

from agents import evaluation, quality
from agents.outline import Brief
from webapp.registry import services
from webapp.registry.models import AdapterVersion, BaseModel

log = logging.getLogger(__name__)

# The measures write with the model stack; the web process, which only reads what the gate found
# and queues it, never loads it.
if TYPE_CHECKING:
    from agents import gate

TASK = services.GATE_TASK  # on the training queue (webapp/jobs/tasks.py)
BRIEFS = settings.BASE_DIR / "training" / "data" / "briefs.json"


class GateError(Exception):
    """The gate cannot measure this version; the message says why."""


def held_out(briefs: Path, count: int, max_words: int) -> list[tuple[int, Brief]]:
    """The first `count` briefs of the file's test half (evaluation.halves), capped at `max_words`."""
    from agents import gate

    try:
        items = json.loads(Path(briefs).read_text())
        test = evaluation.halves(items)["test"][:count]
        return [(number, gate.brief_of(items[number], max_words)) for number in test]
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise GateError(f"{briefs}: not a briefs file ({type(error).__name__}: {error})") from error


def _arms(version: BaseModel | AdapterVersion) -> tuple[gate.Arm, gate.Arm]:
    """(the candidate, the version it would replace), each as the gate writes with it."""
    from agents import gate
    from webapp import llm

    if isinstance(version, BaseModel):
        name, folder = llm.model_folder()  # what this process serves: the active model, or the bundled one
        return (gate.Arm(version.name, llm.load_engine(version.name, services.local_path(version))),
                gate.Arm(name, llm.load_engine(name, folder)))
    if version.role != "writer":
        raise GateError(f"{version}: the gate measures writer adapters and base models (it writes articles); "
                        f"a {version.role} adapter is activated with an override that says why.")
    base = version.base_model
    engine = llm.load_engine(base.name, services.local_path(base))
    active = AdapterVersion.objects.active().filter(role=version.role, base_model=base).exclude(pk=version.pk).first()
    return (gate.Arm(version.name, engine, services.adapter_spec(version)),
            gate.Arm(active.name if active else f"{base.name} without an adapter", engine,
                     services.adapter_spec(active) if active else None))


def measure(version: BaseModel | AdapterVersion, briefs: Path = BRIEFS, count: int = 0,
            max_words: int = 0) -> dict:
    """Write the held-out briefs (by default SCRIPTORIUM_GATE_BRIEFS of them, at most
    SCRIPTORIUM_GATE_WORDS long) with the candidate and the version it would replace, filter off
    and on, and store the comparison with the candidate; or, where it cannot be measured, why.
    Returns the comparison."""
    try:
        return _measure(version, briefs, count or settings.SCRIPTORIUM_GATE_BRIEFS,
                        max_words or settings.SCRIPTORIUM_GATE_WORDS)
    except GateError as error:
        version.gate = {"passed": False, "error": str(error)}
        type(version).objects.filter(pk=version.pk).update(gate=version.gate)
        raise


def _measure(version: BaseModel | AdapterVersion, briefs: Path, count: int, max_words: int) -> dict:
    from agents import gate
    from agents.retrieval import default_embedder

    chosen = held_out(briefs, count, max_words)
    if not chosen:
        raise GateError(f"{briefs}: its test half has no briefs")
    candidate, active = _arms(version)
    judges = (default_embedder().embed, quality.default_lexicon())
    texts = [brief for _, brief in chosen]
    log.info("gate: %s against %s on %d held-out briefs", candidate.label, active.label, len(texts))
    mine, theirs = gate.measure(candidate, texts, *judges), gate.measure(active, texts, *judges)
    passed, reasons = gate.verdict(mine, theirs)
    record = {"passed": passed, "reasons": reasons, "candidate": mine, "active": theirs,
              "briefs": {"file": Path(briefs).name, "half": "test", "numbers": [n for n, _ in chosen],
                         "max_words": max_words},
              "seed": 0, "measured_at": timezone.now().isoformat()}
    type(version).objects.filter(pk=version.pk).update(gate=record)
    version.gate = record
    return record


def promote(version: BaseModel | AdapterVersion) -> bool:
    """Activate the version if, and only if, the gate passed it. Whether it did."""
    if not version.gate_passed:
        return False
    services.activate(version)
    return True
