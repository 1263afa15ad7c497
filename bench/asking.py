"""How soon a person sees an agent's first words when they ask about one passage: "Ask an agent"
(a tracked change streamed onto the selected words) and a reply in a thread of comments. The
bundled model, in this process, through the same code a worker runs (asking.answer,
discussing.reply), from the call to the first text stored for pages to show; on a quiet engine,
then while 8 bulk rows of a writing run decode beside it (interactive requests go first).
Printed side by side in one run; the issue's target is 5 s to the first character.

    .venv/bin/python bench/asking.py      # a throwaway SQLite database; about a minute
"""

from __future__ import annotations

import os
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ["DATABASE_URL"] = f"sqlite:///{tempfile.mkdtemp()}/bench.sqlite3"
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "webapp.settings")

TEXT = ("Terns nest on shingle beaches, laying two eggs in a shallow scrape. The chicks leave the nest within days "
        "and hide among the stones while their parents fish offshore.")
TRIES = 3
BULK_ROWS = 8


def _section():
    from django.core.management import call_command

    from tests.support.factories import make_project, make_user
    from webapp.documents import services as documents

    call_command("migrate", verbosity=0)
    owner = make_user("bench")
    document = documents.document_create(project=make_project(owner, name="Bench"), user=owner, title="Coastal birds",
                                         topic="Seabirds", target_words=600)
    section = documents.section_add(document=document, user=owner, heading="Nesting", word_budget=300)
    documents.section_save_text(section_id=section.id, user=owner, text=TEXT, expected_version=section.version)
    section.refresh_from_db()
    return owner, section


def _first_words(start, stored) -> float:
    """Seconds from start() until stored() first holds text (polled every 10 ms on this thread)."""
    began = time.monotonic()
    worker = threading.Thread(target=start, daemon=True)
    worker.start()
    while not stored():
        time.sleep(0.01)
        if not worker.is_alive() and not stored():
            raise RuntimeError("the agent finished without a word")
    first = time.monotonic() - began
    worker.join()
    return first


def _bulk(stop: threading.Event) -> None:
    """8 rows of a writing run's bulk work, started again as they finish, until `stop`."""
    from agents.llm.types import BULK, GenerationRequest
    from agents.roles import section_writer
    from webapp import llm

    engine = llm.Scheduled(llm.get_engine(section_writer.ROLE), "bench-run", BULK)
    while not stop.is_set():
        rows = [GenerationRequest(id=f"bulk-{time.monotonic()}-{i}", max_new_tokens=300, seed=i, temperature=0.7,
                                  messages=[{"role": "user", "content": f"Write about seabirds, part {i}."}])
                for i in range(BULK_ROWS)]
        for _ in engine.stream(rows, cancel=lambda active: set(active) if stop.is_set() else set()):
            pass


def _cpu() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip() + f", {os.cpu_count()} cores"
    return "unknown"


def main() -> None:
    from webapp.launcher import start_embedded_redis

    env = dict(os.environ)
    redis = None if env.get("REDIS_URL") else start_embedded_redis(env)
    os.environ.update(env)
    import django

    django.setup()
    from agents.roles import section_writer
    from webapp import llm
    from webapp.runs import asking, discussing
    from webapp.runs.models import Comment, Suggestion

    discussing.enqueue = asking.enqueue = lambda *args: None  # run here, not on a worker
    try:
        owner, section = _section()
        llm.get_engine(section_writer.ROLE)  # loaded (and its format chosen) before timing
        arms = {}
        for busy in (False, True):
            stop = threading.Event()
            bulk = threading.Thread(target=_bulk, args=(stop,), daemon=True)
            if busy:
                bulk.start()
                time.sleep(3)  # the rows are decoding
            ask, reply = [], []
            for _ in range(TRIES):
                made = asking.ask(section=section, user=owner, original="laying two eggs in a shallow scrape",
                                  at=0, instruction="concrete")
                ask.append(_first_words(lambda made=made: asking.answer(suggestion_id=made.pk),
                                        lambda made=made: Suggestion.objects.get(pk=made.pk).replacement != ""))
                thread = discussing.comment_start(section=section, user=owner, original="on shingle beaches", at=0,
                                                  body="Only shingle? Sand too, I think.", ask_agent=True)
                answer = thread.replies.get()
                reply.append(_first_words(lambda answer=answer: discussing.reply(comment_id=answer.pk),
                                          lambda answer=answer: Comment.objects.get(pk=answer.pk).body != ""))
            stop.set()
            if busy:
                bulk.join()
            arms["quiet" if not busy else f"{BULK_ROWS} bulk rows decoding"] = (ask, reply)
        print(f"CPU: {_cpu()}; the engine's format is in the log line above")
        print("| engine | Ask an agent: first words s (median of 3) | reply in a thread: first words s | target |")
        print("|---|---|---|---|")
        for name, (ask, reply) in arms.items():
            print(f"| {name} | {statistics.median(ask):.2f} (max {max(ask):.2f}) | "
                  f"{statistics.median(reply):.2f} (max {max(reply):.2f}) | 5 s |")
    finally:
        if redis is not None:
            redis.terminate()


if __name__ == "__main__":
    main()
