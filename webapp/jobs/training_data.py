"""Training pairs from the product: the exact messages a writer was given, and the text people
finally kept for that section.

Every pair is labelled, so nothing is silently mixed in:
- "accepted": the section today is the agent's text, or close to it (light edits by people);
- "rewritten": people rewrote most of it (or took the section over while it streamed); the
  completion is their text, which may still be worth training on, but only if asked for;
- "rejected": people threw the agent's text away: they regenerated the section, or emptied it.
  The completion is then the agent's text, kept for preference data, never for imitation.

The held-out split is by document, so no brief is seen in training and in evaluation.
"""

from __future__ import annotations

import datetime as dt
import difflib
import hashlib
import json
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from agents.roles import section_text
from webapp.runs.models import AgentTask, TaskStatus

ACCEPTED, REWRITTEN, REJECTED = "accepted", "rewritten", "rejected"
REWRITE_BELOW = 0.6  # word-level similarity under which a section counts as rewritten
ROLES = (section_text.ROLE,)  # roles whose prompts are recorded on their tasks


class ExportError(ValueError):
    """An export that cannot be made; the message says why."""


@dataclass
class Export:
    train: list[dict] = field(default_factory=list)
    heldout: list[dict] = field(default_factory=list)

    def labels(self) -> dict[str, int]:
        return dict(Counter(r["label"] for r in self.train + self.heldout))


def similarity(a: str, b: str) -> float:
    """How much of the agent's text survives in the final text (1.0: unchanged), by words."""
    if not a.strip() and not b.strip():
        return 1.0
    return difflib.SequenceMatcher(None, a.split(), b.split(), autojunk=False).ratio()


def pairs(*, role: str, project_id: int | None = None, since: dt.date | None = None,
          until: dt.date | None = None) -> list[dict]:
    """Every finished task of `role` (oldest first), as one labelled record each."""
    if role not in ROLES:
        raise ExportError(f"no training pairs are recorded for the role {role!r}; roles with pairs: "
                          f"{', '.join(ROLES)}")
    tasks = (AgentTask.objects.ended_well().filter(role=role, section__isnull=False)
             .exclude(prompt=[]).select_related("section", "run__document").order_by("finished_at", "id"))
    if project_id is not None:
        tasks = tasks.filter(run__document__project_id=project_id)
    if since is not None:
        tasks = tasks.filter(finished_at__date__gte=since)
    if until is not None:
        tasks = tasks.filter(finished_at__date__lte=until)
    tasks = list(tasks)
    # The last finished writer of a section is the one whose text people saw last.
    finished = AgentTask.objects.ended_well().filter(role=role, section_id__in={t.section_id for t in tasks})
    latest = {task.section_id: task.pk for task in finished.order_by("finished_at", "id")}
    return [_record(task, latest[task.section_id] != task.pk) for task in tasks]


def _record(task: AgentTask, superseded: bool) -> dict:
    section, document = task.section, task.run.document
    agent_text, final = task.checkpoint_text, section.text
    score = similarity(agent_text, final)
    if superseded or not final.strip():
        label, completion = REJECTED, agent_text
    elif task.status == TaskStatus.SKIPPED or score < REWRITE_BELOW:
        label, completion = REWRITTEN, final
    else:
        label, completion = ACCEPTED, final
    return {
        "role": task.role, "label": label, "prompt": task.prompt, "completion": completion,
        "agent_text": agent_text, "similarity": round(score, 4),
        "reason": "regenerated later" if superseded else "emptied" if not final.strip() else "",
        "project": document.project_id, "document": document.pk, "section": str(section.key),
        "task": task.pk, "adapter": task.adapter_version,
        "finished_at": task.finished_at.isoformat() if task.finished_at else None,
    }


def split(records: list[dict], heldout: float, seed: int = 0) -> Export:
    """Held-out by document (a stable hash, so re-exports keep documents on the same side)."""
    if not 0 <= heldout < 1:
        raise ExportError("the held-out share must be at least 0 and below 1")
    documents = sorted({r["document"] for r in records},
                       key=lambda d: hashlib.sha256(f"{seed}:{d}".encode()).hexdigest())
    count = round(len(documents) * heldout)
    if heldout and len(documents) >= 2:
        count = min(max(count, 1), len(documents) - 1)  # both sides get at least one document
    held = set(documents[:count])
    return Export(train=[r for r in records if r["document"] not in held],
                  heldout=[r for r in records if r["document"] in held])


def write(export: Export, folder: Path, *, role: str, filters: dict) -> dict:
    """train.jsonl, heldout.jsonl and manifest.json (what was exported, and how it was filtered)."""
    folder.mkdir(parents=True, exist_ok=True)
    for name, records in (("train", export.train), ("heldout", export.heldout)):
        with open(folder / f"{name}.jsonl", "w", encoding="utf-8") as handle:
            for record in records:
                handle.write(json.dumps(record, ensure_ascii=False) + "\n")
    manifest = {
        "role": role, "filters": filters, "created_at": dt.datetime.now(dt.UTC).isoformat(),
        "train": len(export.train), "heldout": len(export.heldout), "labels": export.labels(),
        "label_meaning": {ACCEPTED: "kept by people (light edits at most)",
                          REWRITTEN: f"people rewrote it (word similarity under {REWRITE_BELOW}) or took it over",
                          REJECTED: "people regenerated or emptied it; completion is the agent's text"},
    }
    (folder / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    return manifest
