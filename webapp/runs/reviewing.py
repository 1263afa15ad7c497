"""After the writers: the run is failed, cancelled or handed to the reviewer and the finisher
(one task on the agents queue; people read the article meanwhile). The reviewer's proposals
become suggestions; the finisher's lead goes into the document and its title is a suggestion."""

from __future__ import annotations

import logging
import time

from django.db import transaction
from django.utils import timezone

from agents import coordinator, steps
from agents.llm.types import BULK, INTERACTIVE
from agents.roles import finisher, reader_checks, reviewer
from webapp import events, llm
from webapp.celery import enqueue
from webapp.documents import crdt
from webapp.documents.models import Document, Section, SourceChunk
from webapp.registry import services as registry
from webapp.runs import lifecycle
from webapp.runs.models import AgentTask, RunStatus, Suggestion, SuggestionStatus, TaskStatus, WritingRun

log = logging.getLogger(__name__)


def finish_if_done(*, run_id: int) -> None:
    """When the last writer is done: fail or cancel the run, or queue the review."""
    with transaction.atomic():
        run = WritingRun.objects.select_for_update().get(pk=run_id)
        if run.status != RunStatus.WRITING:
            return
        if run.tasks.unfinished().exists():
            return
        failed = list(run.tasks.filter(status=TaskStatus.FAILED).values_list("error", flat=True))
        if failed:
            lifecycle.set_status(run, RunStatus.FAILED, "; ".join(failed)[:2000])
            lifecycle.release_sections(run)
        elif run.tasks.filter(status=TaskStatus.CANCELLED).exists():
            lifecycle.set_status(run, RunStatus.CANCELLED)
        elif run.kind == "section":  # one section rewritten: only the checks that need no model
            review_document(document=run.document, run=run)
            lifecycle.set_status(run, RunStatus.DONE)
        else:
            review = steps.after(steps.WRITE)
            assert review is not None
            AgentTask.objects.bulk_create([AgentTask(run=run, role=role, heartbeat_at=timezone.now())
                                           for role in review.roles])
            lifecycle.set_status(run, lifecycle.STAGE_STATUS[review])
            enqueue(lifecycle.STAGE_TASK[review], run.id)


class _RunCancelled:
    """The reviewer's cancel check: the whole run cancelled. Also keeps the tasks' heartbeat."""

    def __init__(self, run: WritingRun, tasks: list[AgentTask]):
        self.flag, self.tasks, self.last, self.lost = lifecycle.run_flag(run), tasks, time.monotonic(), False

    def __call__(self, active: list[str]) -> set[str]:
        if time.monotonic() - self.last >= lifecycle.CHECKPOINT_EVERY_S:
            self.lost = self.lost or bool(lifecycle.heartbeat(self.tasks))  # another worker has the review now
            self.last = time.monotonic()
        return set(active) if self.lost or lifecycle.flags.read([self.flag]) else set()


def run_review(*, run_id: int) -> None:
    """The reviewer's suggestions and the finisher's title and lead, then the run is done. A
    reviewer that fails leaves the article as written; the run says so."""
    run = WritingRun.objects.select_related("document").get(pk=run_id)
    if run.status != RunStatus.REVIEWING:
        return
    claimed = lifecycle.claim(list(run.tasks.filter(role__in=steps.REVIEW.roles).values_list("id", flat=True)))
    if not claimed:
        return
    cancel = _RunCancelled(run, claimed)
    with lifecycle.kept_alive(claimed):  # alive while a cold worker loads (or downloads) the model, too
        for task in sorted(claimed, key=lambda task: steps.REVIEW.roles.index(task.role)):  # the step's order
            tokens: list[str] = []
            try:
                act = {reviewer.ROLE: review_document, finisher.ROLE: finish_document}[task.role]
                act(document=run.document, run=run, cancel=cancel, on_text=tokens.append,
                    engine=llm.for_run(task.role, run.pk, BULK if task.role == reviewer.ROLE else INTERACTIVE))
            except Exception as failure:  # noqa: BLE001  (recorded on the task and the run)
                log.exception("%s failed", task.role)
                lifecycle.held(task).update(status=TaskStatus.FAILED, tokens=len(tokens), finished_at=timezone.now(),
                                            error=f"The {task.role} failed: {failure}"[:2000])
            else:
                lifecycle.held(task).update(status=TaskStatus.DONE, tokens=len(tokens), finished_at=timezone.now())
            if cancel.lost:
                return  # another worker took the review over (this one looked dead): it finishes the run
    finish_review(run_id=run_id)


def finish_review(*, run_id: int) -> None:
    """When the reviewer and the finisher are done: the run is done, saying which of them failed."""
    with transaction.atomic():
        run = WritingRun.objects.select_for_update().get(pk=run_id)
        if run.status != RunStatus.REVIEWING or run.tasks.unfinished().exists():
            return
        failed = run.tasks.filter(role__in=steps.REVIEW.roles, status=TaskStatus.FAILED)
        lifecycle.set_status(run, RunStatus.DONE, "; ".join(failed.values_list("error", flat=True))[:2000])


def _written_leaves(document: Document) -> list[Section]:
    tree = [section for section, _, _ in document.section_tree()]
    parents = {section.parent_id for section in tree}
    return [section for section in tree if section.id not in parents and section.text.strip()]


def review_document(*, document: Document, run: WritingRun | None = None, engine=None, cancel=None,
                    on_text=None) -> list[Suggestion]:
    """The reviewer's proposals, stored as open suggestions (replacing older open ones). Pinned
    sections are left alone. With no engine (one section rewritten), only the rules run: the
    checks with the LLM and those with the classifier, lexicon and embeddings run with a run's."""
    leaves = _written_leaves(document)
    proposals = coordinator.review(engine, document.topic or document.title,
                                   [(str(s.pk), s.heading, s.text) for s in leaves],
                                   adapter=registry.resolve_adapter(reviewer.ROLE) if engine else None,
                                   cancel=cancel, skip=[str(s.pk) for s in leaves if s.pinned], on_text=on_text,
                                   known=coordinator.known_text(document.brief(), _source_texts(document)),
                                   judges=reader_checks.Judges.default() if engine else None)
    keys = {str(s.pk): s.key for s in leaves}
    anchors = _Anchored(crdt.load(document.pk)) if proposals else None
    with transaction.atomic():
        document.suggestions.filter(status=SuggestionStatus.OPEN, role=reviewer.ROLE).delete()
        created = Suggestion.objects.bulk_create(
            Suggestion(document=document, section_id=int(p.section_key), run=run, role=reviewer.ROLE, kind=p.kind,
                       original=p.original, replacement=p.replacement, reason=p.reason,
                       anchor=anchors(keys[p.section_key], p.original)) for p in proposals)
        events.send(events.SuggestionsChanged(document_id=document.id, open=len(created)))
    return created


SOURCE_CHARS = 20_000_000  # of the project's sources that claims are looked up in (the rest is not read)


def _source_texts(document: Document) -> list[str]:
    """The text of the project's ready sources, which the article's claims may rest on."""
    texts, size = [], 0
    chunks = SourceChunk.objects.filter(source__project_id=document.project_id, source__status="ready")
    for text in chunks.values_list("text", flat=True).iterator():
        texts.append(text)
        size += len(text)
        if size >= SOURCE_CHARS:
            break
    return texts


class _Anchored:
    """A suggestion's place in the shared text, which people's editors mark and which follows
    their edits; empty if the text is no longer there (the page then shows it as outdated)."""

    def __init__(self, shared):
        self.shared, self.sections = shared, {}

    def __call__(self, key, original: str) -> dict:
        start = crdt.section_text(self.shared, key).find(original)
        if start < 0 or not original:
            return {}
        if key not in self.sections:
            self.sections[key] = crdt.Anchors(self.shared, key)
        return self.sections[key].make(start, start + len(original))


def finish_document(*, document: Document, run: WritingRun | None = None, engine=None, cancel=None,
                    on_text=None) -> finisher.Finish:
    """The finisher's lead goes into the document unless a person wrote the lead; its title is a
    suggestion (people named the document)."""
    result = coordinator.finish(engine or llm.get_engine(finisher.ROLE), document.brief(),
                                [(s.heading, s.text) for s in _written_leaves(document)],
                                adapter=registry.resolve_adapter(finisher.ROLE), cancel=cancel, on_text=on_text)
    with transaction.atomic():
        document = Document.objects.select_for_update().get(pk=document.pk)
        if document.lead_by_agent or not document.lead.strip():
            document.lead, document.lead_by_agent = result.lead, True
            document.save(update_fields=["lead", "lead_by_agent", "updated_at"])
        document.suggestions.filter(status=SuggestionStatus.OPEN, role=finisher.ROLE).delete()
        if result.title_path == "model" and result.title.strip().lower() != document.title.strip().lower():
            Suggestion.objects.create(document=document, section=None, run=run, role=finisher.ROLE, kind="title",
                                      original=document.title, replacement=result.title,
                                      reason="The finisher's title for the finished article.")
        events.send(events.DocumentFinished(document_id=document.id, lead=document.lead))
    return result
