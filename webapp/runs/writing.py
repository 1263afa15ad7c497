"""Writing a batch of leaf sections: the coordinator's writer tasks for the claimed sections,
streamed into the shared document as they come, checkpointed every second (a killed worker's
sections resume from there on another worker), and each handed back the moment its writer is done
while the others are still written: saved unless a person took the section over or changed it
meanwhile (then theirs stays, and ours is kept as a revision), and unlocked for people."""

from __future__ import annotations

import dataclasses
import logging
import time

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from agents import coordinator
from agents.llm.types import BULK, INTERACTIVE, AdapterSpec, Engine
from agents.outline import Brief, PlannedSection
from agents.roles import section_text, section_writer
from webapp import llm
from webapp.documents import crdt, sources
from webapp.documents import services as documents
from webapp.documents.models import Section, SectionStatus
from webapp.registry import services as registry
from webapp.runs import lifecycle, reviewing
from webapp.runs.models import AgentTask, RunStatus, TaskStatus, WritingRun

log = logging.getLogger(__name__)

BROADCAST_EVERY_S = 0.1  # at most about ten shared-document updates a second per writer batch
WRITER = {"name": "Section writer", "role": section_writer.ROLE, "color": "#8e24aa"}


class _Streamer:
    """Collects streamed text per section: writes it into the shared document as a peer (people's
    editors show it as it comes, and lock the section while the agent writes), every 0.1 s for all
    its sections at once, while each is still its own; and checkpoints it every second."""

    def __init__(self, run: WritingRun, tasks: dict[str, AgentTask]):
        self.run, self.tasks = run, tasks
        self.text = {key: task.checkpoint_text for key, task in tasks.items()}
        self.peer = crdt.Peer(run.document_id, section_writer.ROLE)
        for key, task in tasks.items():
            self.peer.set_writer(task.section.key, WRITER | {"run": run.pk})
            self.peer.replace(task.section.key, self.text[key])  # a rewrite starts from its checkpoint
        self.unsent = {key: "" for key in tasks}
        self.tokens = {key: 0 for key in tasks}
        self.last_sent = 0.0
        self.last_saved = time.monotonic()
        self.handed_back: set[str] = set()  # sections done: no more checkpoints, unlocked
        self.kept_at = {key: task.progressed_at for key, task in tasks.items()}  # the last sentence kept
        self.refused = {key: (0, "") for key in tasks}  # tries in a row refused since, and why (the last)
        self.stopped: set[str] = set()  # taken over by a person, or given to a rewrite: nothing more of ours goes in
        self.flags = {key: lifecycle.task_flag(task) for key, task in tasks.items()}

    def __call__(self, key: str, piece: str) -> None:
        if key in self.stopped:
            return
        self.text[key] += piece
        self.tokens[key] += 1  # the engine streams one token's text per call
        self.kept_at[key] = timezone.now()
        self.refused[key] = (0, "")
        self.unsent[key] += piece
        now = time.monotonic()
        if now - self.last_sent >= BROADCAST_EVERY_S:
            self._send(now)
        if now - self.last_saved >= lifecycle.CHECKPOINT_EVERY_S:
            self.checkpoint()

    def refuse(self, key: str, tries: int, defect: str) -> None:
        """A step of this section kept nothing: it is revising, not stuck; the panel says so, with
        why, at the next checkpoint (taken here too when due: no text may stream for a while)."""
        self.refused[key] = (tries, defect)
        if time.monotonic() - self.last_saved >= lifecycle.CHECKPOINT_EVERY_S:
            self.checkpoint()

    def _send(self, now: float) -> None:
        """Every section's new text: one shared-document update for all of them (one stored row:
        with one per section, the task thread spent most of its time committing them and fell
        behind the serving core). The shared document is how streamed text reaches every page and
        Yjs peer; no event repeats it."""
        pending = {key for key, piece in self.unsent.items() if piece and key not in self.handed_back}
        if pending:
            with transaction.atomic():
                for key in pending - self._still_ours(pending):
                    self.stop(key)
                pieces = {self.tasks[key].section.key: self.unsent[key] for key in pending if key not in self.stopped}
                if pieces:
                    self.peer.append_many(pieces)
        self.unsent = {key: "" for key in self.unsent}
        self.last_sent = now

    def _still_ours(self, keys: set[str]) -> set[str]:
        """Of these sections, those this writer still holds, with their tasks' rows locked until
        the text is stored: a rewrite or a take-over changes the row (or sets the flag) under the
        same lock, so no piece of ours lands after it, even one judged before the writers' cancel
        check saw it (the rewrite's writer reads the shared text after that)."""
        tasks = {self.tasks[key].pk: key for key in keys}
        rows = AgentTask.objects.select_for_update().filter(pk__in=tasks).values_list("pk", "attempts", "status")
        held = {tasks[pk] for pk, attempts, status in rows
                if attempts == self.tasks[tasks[pk]].attempts and status == TaskStatus.RUNNING}
        flagged = lifecycle.flags.read([self.flags[key] for key in held])
        return {key for key in held if self.flags[key] not in flagged}

    def checkpoint(self) -> None:
        """The text so far onto each task and section, with the task's words and tokens (the page's
        Agents panel shows them as they grow)."""
        now = timezone.now()
        for key, task in self.tasks.items():
            if key in self.handed_back:
                continue
            if not lifecycle.held(task).filter(status=TaskStatus.RUNNING).update(
                    checkpoint_text=self.text[key], heartbeat_at=now, words=len(self.text[key].split()),
                    tokens=self.tokens[key], progressed_at=self.kept_at[key], refused_tries=self.refused[key][0],
                    refused_for=self.refused[key][1][:20]):
                continue  # another worker took it over: its checkpoints count now
            # Into the section too, unless a person changed it since writing began.
            Section.objects.filter(pk=task.section_id, version=task.base_version).update(
                text=self.text[key], status=SectionStatus.WRITING)
        lifecycle.progress(self.run.pk, self.run.document_id)
        self.last_saved = time.monotonic()

    def flush(self) -> None:
        self._send(time.monotonic())

    def hand_back(self, key: str) -> None:
        """The writer of this section is done: people may type in it."""
        self.handed_back.add(key)
        self.peer.set_writer(self.tasks[key].section.key, None)

    def stop(self, key: str) -> None:
        """A person took this section over, or asked for a rewrite: from now on nothing of this
        writer's goes into the shared text (a rewrite's writer may be writing there already). A
        piece not sent yet is dropped from what it wrote too, so its text is what people saw."""
        if key in self.stopped:
            return
        self.stopped.add(key)
        if self.unsent[key]:
            self.text[key] = self.text[key][:-len(self.unsent[key])]
            self.unsent[key] = ""

    def drop(self, key: str) -> None:
        """Another writer has this section now (another worker, or a rewrite): nothing more of
        ours goes into it, and its lock stays, as the other writer's."""
        self.handed_back.add(key)
        self.unsent[key] = ""

    def release(self, lost: frozenset[str] = frozenset()) -> None:
        """The agent is done with its sections (finished, cancelled or failed): people may type.
        Sections in `lost` are another worker's now, and stay its."""
        for key in self.tasks:
            if key not in lost and key not in self.handed_back:
                self.hand_back(key)


class _Watch:
    """The writers' cancel check, asked between decode steps with the running requests as
    {request id: task key}: stops them all when the run is cancelled, and one when a person took
    its section over (one Redis round trip). Once a second it also tells the watcher the writers
    are alive even while their requests wait for a row of the serving core (no text, so no
    checkpoint: without this, a wait past WRITER_STALE_S had the section given to a second
    writer), and keeps each waiting writer's place in the core's queue on its task, so the page
    can say "3 requests ahead"."""

    def __init__(self, run: WritingRun, engine: Engine, tasks: dict[str, AgentTask]):
        self.run_flag = lifecycle.run_flag(run)
        self.run_id, self.document_id = run.pk, run.document_id
        self.task_flags = {key: lifecycle.task_flag(task) for key, task in tasks.items()}
        self.core = getattr(engine, "core", None)
        self.tasks, self.last, self.shown = tasks, time.monotonic(), {}
        self.lost: set[str] = set()  # sections another worker claimed since (this one looked dead to the watcher)

    def __call__(self, active: dict[str, str]) -> set[str]:
        if time.monotonic() - self.last >= lifecycle.CHECKPOINT_EVERY_S:
            self.last = time.monotonic()
            self._keep_alive(active)
        set_flags = lifecycle.flags.read([self.run_flag] + [self.task_flags[key] for key in set(active.values())])
        if self.run_flag in set_flags:
            return set(active)
        return {request_id for request_id, key in active.items() if self.task_flags[key] in set_flags
                or key in self.lost}

    def _keep_alive(self, active: dict[str, str]) -> None:
        lost = lifecycle.heartbeat(list(self.tasks.values()))
        self.lost |= {key for key, task in self.tasks.items() if task.pk in lost}
        moved = False
        for request_id, key in active.items() if self.core is not None else ():
            ahead = self.core.position(request_id)
            if self.shown.get(key) != ahead:
                self.shown[key] = ahead
                AgentTask.objects.filter(pk=self.tasks[key].pk).update(waiting_ahead=ahead)
                moved = True
        if moved:
            lifecycle.progress(self.run_id, self.document_id)

    def taken_over(self) -> dict[str, str]:
        """Task key -> the person who took its section over."""
        by = lifecycle.flags.read(self.task_flags.values())
        return {key: by[flag] for key, flag in self.task_flags.items() if flag in by}


def run_write_batch(*, run_id: int, task_ids: list[int]) -> None:
    run = WritingRun.objects.select_related("document__project").get(pk=run_id)
    if run.status != RunStatus.WRITING:
        return
    claimed = lifecycle.claim(task_ids)
    if not claimed:
        return
    with lifecycle.kept_alive(claimed):
        _write(run, claimed)


def _write(run: WritingRun, claimed: list[AgentTask]) -> None:
    try:
        prepared = _prepare(run, claimed)
    except Exception as error:  # noqa: BLE001  (no model, a failed download: the tasks say why)
        log.exception("preparing the writers failed")
        AgentTask.objects.filter(pk__in=[t.pk for t in claimed]).update(
            status=TaskStatus.FAILED, error=f"The writer could not start: {error}"[:2000], finished_at=timezone.now())
        reviewing.finish_if_done(run_id=run.id)
        return
    if prepared is None:
        return
    engine, by_key = prepared.engine, prepared.by_key
    streamer = _Streamer(run, by_key)
    watch = _Watch(run, engine, by_key)
    hand_back = _HandBack(run, engine, by_key, streamer, watch, prepared.cited)
    try:
        results = coordinator.write(
            engine, prepared.brief, prepared.sections, prepared.work,
            drafts={key: task.checkpoint_text for key, task in by_key.items()},
            options=section_writer.WriterOptions(adapter=prepared.adapter, filters=settings.SCRIPTORIUM_WRITER_FILTERS),
            hooks=section_writer.WriterHooks(on_text=streamer, on_refused=streamer.refuse, on_done=hand_back,
                                             cancel=watch))
    except Exception as error:  # noqa: BLE001  (recorded on the tasks; the run reports it)
        log.exception("writing failed")
        streamer.release(frozenset(watch.lost))
        for key, task in by_key.items():
            if key not in hand_back.done:  # those handed back are saved and done
                lifecycle.held(task).update(status=TaskStatus.FAILED, error=str(error)[:2000],
                                            finished_at=timezone.now())
        reviewing.finish_if_done(run_id=run.id)
        return
    for written in results.values():  # each was handed back as it finished; this is for any that was not
        hand_back(written)
    streamer.release(frozenset(watch.lost))
    lifecycle.progress(run.pk, run.document_id)
    reviewing.finish_if_done(run_id=run.id)


@dataclasses.dataclass
class _Prepared:
    engine: Engine
    adapter: AdapterSpec | None
    brief: Brief
    sections: list[PlannedSection]
    work: list[section_writer.SectionTask]
    by_key: dict[str, AgentTask]  # section key -> its task
    cited: dict[str, list[int]]  # section key -> the passages its writer was given


def _prepare(run: WritingRun, claimed: list[AgentTask]) -> _Prepared | None:
    """The engine, the adapter and each claimed section's writer (with its passages and the text
    it must not repeat); None when no claimed section is left to write."""
    document = run.document
    brief, sections = document.brief(), document.planned()
    outline = coordinator.outline_text(sections)
    by_key = {str(task.section_id): task for task in claimed if task.section_id}
    work = [task for task in coordinator.writer_tasks(sections) if task.key in by_key]
    gone = [task.pk for task in claimed if str(task.section_id) not in {w.key for w in work}]
    if gone:  # deleted, or given subsections, since the run was approved
        AgentTask.objects.filter(pk__in=gone).update(status=TaskStatus.SKIPPED, finished_at=timezone.now(),
                                                     error="The section is no longer a leaf of the outline.")
        by_key = {w.key: by_key[w.key] for w in work}
    # A person waits on a one-section rewrite: it goes before the bulk writing of whole runs.
    engine = llm.for_run(section_writer.ROLE, run.pk, INTERACTIVE if run.kind == "section" else BULK)
    adapter = registry.resolve_adapter(section_writer.ROLE)
    cited = {}
    for writer in work:
        task = by_key[writer.key]
        writer.instruction = task.instruction
        found = [chunk for chunk, _ in sources.source_passages(project=document.project,
                                                               query=coordinator.passage_query(writer),
                                                               k=coordinator.PASSAGES_PER_WRITER)]
        writer.passages = [chunk.text[:coordinator.PASSAGE_CHARS] for chunk in found]
        cited[writer.key] = [chunk.pk for chunk in found]
        task.adapter_version = adapter.name if adapter else ""
        AgentTask.objects.filter(pk=task.pk).update(
            context_bytes=section_text.context_bytes(brief, outline, writer),
            prompt=coordinator.writer_prompt(brief, sections, writer), adapter_version=task.adapter_version)
    if not work:
        reviewing.finish_if_done(run_id=run.id)
        return None
    # What the document's other sections already say, so this batch does not say it again.
    siblings = [text for text in Section.objects.filter(document=document).exclude(
        pk__in=[int(w.key) for w in work]).exclude(text="").values_list("text", flat=True)]
    for writer in work:
        writer.avoid = siblings
    return _Prepared(engine, adapter, brief, sections, work, by_key, cited)


class _HandBack:
    """Each section the moment its writer is done, while the batch's other sections are still
    written: its text saved (or the person's, where they took it over; or nowhere, where another
    worker claimed it meanwhile: that worker's text will count), its revision recorded, its task
    done, and its lock in people's editors lifted, so they can edit it at once."""

    def __init__(self, run: WritingRun, engine: Engine, by_key: dict[str, AgentTask], streamer: _Streamer,
                 watch: _Watch, cited: dict[str, list[int]]):
        self.run, self.engine, self.by_key, self.streamer, self.watch = run, engine, by_key, streamer, watch
        self.cited = cited
        self.done: set[str] = set()

    def __call__(self, written: section_writer.WrittenSection) -> None:
        key = written.key
        if key in self.done:
            return
        self.done.add(key)
        task = self.by_key[key]
        if key in self.watch.lost or lifecycle.heartbeat([task]):
            self.watch.lost.add(key)
            self.streamer.drop(key)
            log.warning("section %s was given to another writer while this one wrote it; its text is dropped",
                        task.section_id)
            return
        self.streamer.flush()
        taken_by = self.watch.taken_over().get(key)
        if taken_by:  # the person's now: their editor holds the text so far, as streamed
            Section.objects.filter(pk=task.section_id, status=SectionStatus.WRITING).update(
                text=self.streamer.text[key], status=SectionStatus.EDITED)
            AgentTask.objects.filter(pk=task.pk).update(
                status=TaskStatus.SKIPPED, words=written.words, tokens=self.streamer.tokens[key],
                finished_at=timezone.now(), error=f"Taken over by {taken_by}.")
        else:
            _save(self.run, task, written, self.streamer.peer,
                  lifecycle.model_version(self.engine, task.adapter_version), self.cited[key])
            status = TaskStatus.CANCELLED if written.finish == "cancelled" else TaskStatus.DONE
            lifecycle.held(task).update(status=status, checkpoint_text=written.text, words=written.words,
                                        tokens=self.streamer.tokens[key], finished_at=timezone.now())
        self.streamer.hand_back(key)
        lifecycle.progress(self.run.pk, self.run.document_id)


def _save(run: WritingRun, task: AgentTask, written: section_writer.WrittenSection, peer: crdt.Peer,
          model_version: str, cited: list[int]) -> None:
    """The writer's text into its section. If a person edited the section meanwhile, theirs stays
    and ours is kept as a conflict revision."""
    try:
        documents.section_save_text(section_id=task.section_id, user=None, text=written.text,
                                    expected_version=task.base_version, agent_role=section_writer.ROLE,
                                    model_version=model_version, peer=peer)  # holds the text it streamed: no reload
    except documents.SectionConflict as conflict:
        # A person saved a form meanwhile: a fresh copy of the shared text includes their change.
        crdt.Peer(run.document_id, section_writer.ROLE).replace(task.section.key, conflict.section.text)
    else:
        # [1], [2], ... in this text are these chunks, in this order.
        Section.objects.filter(pk=task.section_id).update(citations=cited)
