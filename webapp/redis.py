"""This process's Redis client, and the cancel flags every process shares through it.

Below every app: events (sequence numbers), the runs (cancel flags), the engine (published
serving metrics) and /healthz use this one client."""

from __future__ import annotations

import functools
import logging
from collections.abc import Iterable

import redis
from django.conf import settings
from redis.backoff import NoBackoff
from redis.retry import Retry

log = logging.getLogger(__name__)

CANCEL_TTL_S = 24 * 3600


def client() -> redis.Redis:
    """The client for REDIS_URL (one per URL, kept for the process). No retries: when Redis is
    down a save should not wait on it, only skip the broadcast."""
    return _client_for(settings.REDIS_URL)


@functools.cache
def _client_for(url: str) -> redis.Redis:
    return redis.Redis.from_url(url, socket_timeout=2, socket_connect_timeout=1, retry=Retry(NoBackoff(), 0))


class CancelFlags:
    """Flags that ask whoever is generating to stop: set by the web (a person pressed cancel,
    took a section over), read by a worker between decode steps, one round trip for a batch.

    One scheme for everything: `scriptorium:cancel:<name>`, where a name is a run, a task or a
    plain request id (see the runs' lifecycle for the names it uses). A flag's value says who set
    it, so a section taken over can be credited to the person who took it."""

    prefix = "scriptorium:cancel:"

    def set(self, name: str, by: str = "1") -> None:
        client().set(self.prefix + name, by, ex=CANCEL_TTL_S)

    def read(self, names: Iterable[str]) -> dict[str, str]:
        """The flags that are set among `names`: name -> who set it."""
        names = list(names)
        if not names:
            return {}
        try:
            values = client().mget([self.prefix + name for name in names])
        except redis.RedisError as error:
            # Redis is away (restarting): nobody can have set a flag meanwhile that we could read,
            # and a writer must not fail for it; the next check reads again.
            log.warning("could not read cancel flags (%s); going on", error)
            return {}
        return {name: value.decode() for name, value in zip(names, values, strict=True) if value}

    def __call__(self, active: list[str]) -> set[str]:
        """The engine's cancel check over request ids."""
        return set(self.read(active))
