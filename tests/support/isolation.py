"""A pytest plugin (loaded with -p, before Django reads its settings): when pytest-xdist runs the
suite in several processes, each gets its own Redis database (broker, results, channel layer,
event numbers, cancel flags), as it gets its own test database from pytest-django, so their
Celery workers and sockets never see each other's work."""

from __future__ import annotations

import os
import re

_worker = os.environ.get("PYTEST_XDIST_WORKER", "")
if _worker.startswith("gw") and os.environ.get("REDIS_URL"):
    os.environ["REDIS_URL"] = re.sub(r"(/\d+)?$", f"/{int(_worker[2:]) + 1}", os.environ["REDIS_URL"].rstrip("/"),
                                     count=1)
