"""Log-in throttling: after FAILURES_PER_ACCOUNT wrong passwords for one username, or
FAILURES_PER_ADDRESS from one address, within WINDOW_S, log-ins there are refused (even with
the right password) until the window passes. Counted in Redis, so every web process agrees; if
Redis is down, log-ins are not throttled (and the log says so) rather than refused."""

from __future__ import annotations

import contextlib
import hashlib
import logging

import redis

from webapp import redis as shared

log = logging.getLogger(__name__)

FAILURES_PER_ACCOUNT = 5
FAILURES_PER_ADDRESS = 20
WINDOW_S = 15 * 60


def _key(kind: str, value: str) -> str:
    return f"scriptorium:login-failures:{kind}:{hashlib.sha256(value.strip().lower().encode()).hexdigest()[:32]}"


def locked_for(username: str, address: str) -> int:
    """Seconds until log-ins for this username from this address are allowed again (0: now)."""
    try:
        client = shared.client()
        waits = [max(client.ttl(key), 1) for key, limit in ((_key("user", username), FAILURES_PER_ACCOUNT),
                                                           (_key("address", address), FAILURES_PER_ADDRESS))
                 if int(client.get(key) or 0) >= limit]
    except redis.RedisError as error:
        log.warning("log-in throttling is off: Redis cannot be reached (%s)", error)
        return 0
    return max(waits, default=0)


def failed(username: str, address: str) -> None:
    try:
        client = shared.client()
        for key in (_key("user", username), _key("address", address)):
            client.incr(key)
            if client.ttl(key) < 0:  # the window starts at the first failure
                client.expire(key, WINDOW_S)
    except redis.RedisError as error:
        log.warning("could not count a failed log-in (%s)", error)


def succeeded(username: str) -> None:
    with contextlib.suppress(redis.RedisError):  # the counter then just runs out
        shared.client().delete(_key("user", username))
