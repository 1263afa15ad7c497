"""Streaming benchmark: 20 browsers' worth of WebSocket clients follow one document while 6
sections stream, through a real uvicorn server and Redis.

The writer side is what a section writer's `_Streamer` does for each coalesced piece (every
0.1 s per section): append it to the shared document (`crdt.Peer.append`: stored, then sent to
the document's group); no event repeats the text. Each client holds both sockets a page holds:
the shared document (pycrdt over the y-websocket protocol) and the events relay. Every piece
carries a number; a client records when each number arrives. Printed: latency from the writer
emitting a piece to each client receiving it (p50, p99, max) and the share delivered, and
whether every client's document equals the stored one after the end (the "resync": a client's
sync with the server on reconnect gives it exactly this state).

    .venv/bin/python bench/streaming.py      # about a minute; REDIS_URL or embedded Redis
"""

from __future__ import annotations

import asyncio
import os
import re
import statistics
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "webapp.settings")

CLIENTS, SECTIONS, SECONDS, EVERY_S = 20, 6, 10.0, 0.1
MARK = re.compile(r"w(\d+)\.")


def _env() -> tuple[dict, subprocess.Popen | None]:
    from webapp.launcher import start_embedded_redis

    env = dict(os.environ)
    redis = None if env.get("REDIS_URL") else start_embedded_redis(env)
    os.environ.update(env)
    return env, redis


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _setup():
    from django.core.management import call_command
    from django.test import Client

    from tests.support.factories import make_document, make_project, make_user

    call_command("migrate", verbosity=0)
    stamp = int(time.time())
    user = make_user(f"bench{stamp}")
    document = make_document(make_project(user, name="Streaming bench"), user,
                             sections=tuple(f"Section {i + 1}" for i in range(SECTIONS)))
    client = Client()
    client.force_login(user)
    return document, client.cookies["sessionid"].value


class Follower:
    """One browser: the shared document and the events relay, with arrival times per piece."""

    def __init__(self, base: str, document_id: int, session: str):
        from pycrdt import Doc

        self.base, self.document_id, self.session = base, document_id, session
        self.doc = Doc()
        self.crdt_seen: dict[int, float] = {}

    async def run(self, stop: asyncio.Event) -> None:
        import websockets

        headers = {"Cookie": f"sessionid={self.session}", "Origin": self.base}
        ws_base = self.base.replace("http", "ws") + f"/ws/documents/{self.document_id}"
        async with websockets.connect(f"{ws_base}/crdt", additional_headers=headers, max_size=None) as shared, \
                websockets.connect(f"{ws_base}/events/", additional_headers=headers) as events:
            await asyncio.gather(self._shared(shared, stop), self._events(events, stop))

    async def _shared(self, socket, stop: asyncio.Event) -> None:
        from pycrdt import Decoder, create_sync_message, handle_sync_message

        step1 = await socket.recv()
        await socket.send(handle_sync_message(step1[1:], self.doc))
        await socket.send(create_sync_message(self.doc))
        while not stop.is_set():
            try:
                message = await asyncio.wait_for(socket.recv(), 0.5)
            except TimeoutError:
                continue
            now = time.perf_counter()
            if message[0] == 0 and message[1] in (1, 2):
                update = Decoder(message[2:]).read_message()
                for number in MARK.findall(update.decode("utf-8", "ignore")):
                    self.crdt_seen.setdefault(int(number), now)
                handle_sync_message(message[1:], self.doc)

    async def _events(self, socket, stop: asyncio.Event) -> None:
        """Held open as a page holds it (it carries region changes, not streamed text)."""
        while not stop.is_set():
            try:
                await asyncio.wait_for(socket.recv(), 0.5)
            except TimeoutError:
                continue


def _write(document, emitted: dict[int, float], done: threading.Event) -> None:
    """Six sections streaming at once, as the writers' streamer sends them."""
    from webapp.documents import crdt

    peer = crdt.Peer(document.id, "writer")
    sections = list(document.sections.all())
    number, end = 0, time.monotonic() + SECONDS
    while time.monotonic() < end:
        started = time.monotonic()
        for section in sections:
            piece = f" w{number}."
            emitted[number] = time.perf_counter()
            peer.append(section.key, piece)
            number += 1
        time.sleep(max(0.0, EVERY_S - (time.monotonic() - started)))
    done.set()


def _summary(name: str, emitted: dict[int, float], seen: list[dict[int, float]]) -> str:
    latencies = [(arrived[n] - emitted[n]) * 1000 for arrived in seen for n in emitted if n in arrived]
    expected = len(emitted) * len(seen)
    latencies.sort()
    p99 = latencies[int(0.99 * (len(latencies) - 1))] if latencies else float("nan")
    return (f"| {name} | {len(emitted)} | {len(seen)} | {statistics.median(latencies):.1f} | {p99:.1f} | "
            f"{latencies[-1]:.1f} | {100 * len(latencies) / expected:.2f}% |")


async def _follow(base: str, document, session: str, emitted: dict[int, float]) -> tuple[list, str]:
    from asgiref.sync import sync_to_async

    followers = [Follower(base, document.id, session) for _ in range(CLIENTS)]
    stop = asyncio.Event()
    tasks = [asyncio.create_task(f.run(stop)) for f in followers]
    await asyncio.sleep(2)  # everyone connected and synced
    done = threading.Event()
    writer = threading.Thread(target=_write, args=(document, emitted, done))
    writer.start()
    while not done.is_set():
        await asyncio.sleep(0.2)
    await asyncio.sleep(2)  # the last pieces arrive
    stop.set()
    await asyncio.gather(*tasks)
    writer.join()

    def stored_texts():
        from webapp.documents import crdt

        keys = list(document.sections.values_list("key", flat=True))
        return keys, crdt.section_texts(crdt.load(document.id), keys)

    keys, stored = await sync_to_async(stored_texts)()
    from webapp.documents import crdt

    missing = sum(crdt.section_texts(f.doc, keys) != stored for f in followers)
    return followers, f"{CLIENTS - missing} of {CLIENTS} clients hold exactly the stored document at the end"


def main() -> None:
    env, redis = _env()
    import django

    django.setup()
    document, session = _setup()
    port = _free_port()
    server = subprocess.Popen([sys.executable, "-m", "uvicorn", "webapp.asgi:application", "--port", str(port),
                               "--log-level", "warning"], cwd=ROOT, env=env)
    base = f"http://127.0.0.1:{port}"
    try:
        for _ in range(100):
            try:
                urllib.request.urlopen(base + "/healthz", timeout=1)
                break
            except OSError:
                time.sleep(0.2)
        emitted: dict[int, float] = {}
        followers, whole = asyncio.run(_follow(base, document, session, emitted))
    finally:
        server.terminate()
        server.wait(timeout=15)
        if redis:
            redis.terminate()
    print(f"{CLIENTS} clients, {SECTIONS} sections streaming for {SECONDS:.0f} s, a piece per section every "
          f"{EVERY_S * 1000:.0f} ms, one uvicorn process, Redis channel layer")
    print("| path | pieces | clients | p50 ms | p99 ms | max ms | delivered |\n|---|---|---|---|---|---|---|")
    print(_summary("shared document (CRDT updates)", emitted, [f.crdt_seen for f in followers]))
    print(whole)


if __name__ == "__main__":
    main()
