"""Who is on a document's page, as the server tells it. Browsers announce their presence (Yjs
awareness: a name, a colour, a cursor) and the CRDT consumer relays it to everyone; it never
relays what a client claims about itself: the name is the signed-in person's, the colour is
chosen here, only the cursor is kept, and a socket speaks only for the Yjs clients it
introduced first and no other member's socket had claimed."""

from __future__ import annotations

import json
from collections.abc import Callable

from pycrdt import Decoder, write_var_uint

COLOURS = ("#1e88e5", "#e53935", "#43a047", "#fb8c00", "#00897b", "#5e35b1", "#d81b60", "#6d4c41")
MAX_STATE_BYTES = 10_000
MAX_CLIENTS_PER_SOCKET = 2  # a page has one Yjs client (Yjs may renew its id once)
CLAIM_TTL_S = 120  # a page's presence heartbeat comes every 15 s and renews its claim


def colour(name: str) -> str:
    """A person's colour for cursors and presence: the same on every page and for every viewer."""
    return COLOURS[sum(name.encode()) % len(COLOURS)]


def person(name: str) -> dict:
    return {"name": name, "color": colour(name), "colorLight": f"{colour(name)}33"}


def claimer(document_id: int, user_id: int) -> Callable[[int], bool]:
    """Whether this person may speak for a Yjs client on this document's page: the first person
    whose socket uses a client id holds it (any of their sockets: a page that reconnects keeps
    its id) while it is in use, in Redis, so sockets on other web machines see the claim too."""
    from webapp.redis import client as redis_client

    redis, mine = redis_client(), str(user_id).encode()

    def claim(yjs_client: int) -> bool:
        key = f"presence:{document_id}:{yjs_client}"
        if redis.set(key, mine, nx=True, ex=CLAIM_TTL_S):
            return True
        if redis.get(key) == mine:
            redis.expire(key, CLAIM_TTL_S)
            return True
        return False

    return claim


def rewrite(message: bytes, name: str, client_ids: set[int],
            claim: Callable[[int], bool] | None = None) -> bytes | None:
    """The awareness message `message` (y-protocols: type 1, then the update) with every state's
    `user` replaced by `name`'s, only `cursor` kept besides, and only for the clients in
    `client_ids` (which the first message fills) that `claim` says are this person's, not
    another member's. None if nothing is left or it does not parse."""
    try:
        update = Decoder(message[1:]).read_message()
        if update is None:
            return None
        decoder = Decoder(update)
        entries = []
        for _ in range(decoder.read_var_uint()):
            client, clock, state = decoder.read_var_uint(), decoder.read_var_uint(), decoder.read_var_string()
            entries.append((client, clock, state))
    except (ValueError, IndexError, UnicodeDecodeError, RuntimeError):
        return None
    kept = []
    for client, clock, state in entries:
        if client not in client_ids and len(client_ids) >= MAX_CLIENTS_PER_SOCKET:
            continue
        if claim is not None and not claim(client):
            continue  # another member's client: nobody may remove or overwrite their presence
        client_ids.add(client)
        kept.append((client, clock, _state(state, name)))
    if not kept:
        return None
    inner = write_var_uint(len(kept)) + b"".join(
        write_var_uint(client) + write_var_uint(clock) + _string(state) for client, clock, state in kept)
    return bytes([message[0]]) + write_var_uint(len(inner)) + inner


def _string(text: str) -> bytes:
    data = text.encode()  # lib0's var string: its length in bytes, then the bytes
    return write_var_uint(len(data)) + data


def _state(state: str, name: str) -> str:
    if state == "null" or len(state.encode()) > MAX_STATE_BYTES:
        return "null" if state == "null" else json.dumps({"user": person(name)})
    try:
        claimed = json.loads(state)
    except ValueError:
        claimed = {}
    cursor = claimed.get("cursor") if isinstance(claimed, dict) else None
    rewritten: dict = {"user": person(name)}
    if isinstance(cursor, dict):
        rewritten["cursor"] = cursor
    return json.dumps(rewritten)
