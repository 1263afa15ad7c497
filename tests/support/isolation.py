"""A pytest plugin (loaded with -p, before Django reads its settings): when pytest-xdist runs the
suite in several processes, each gets its own Redis database (broker, results, channel layer,
event numbers, cancel flags), as it gets its own test database from pytest-django, so their
Celery workers and sockets never see each other's work. Each also gets its share of the cores
for torch (OMP_NUM_THREADS, inherited by the workers and servers it starts): two processes each
spinning two OpenMP threads on two cores slowed the bundled model's tests five- to tenfold."""

from __future__ import annotations

import os
import re

_worker = os.environ.get("PYTEST_XDIST_WORKER", "")
if _worker.startswith("gw") and os.environ.get("REDIS_URL"):
    os.environ["REDIS_URL"] = re.sub(r"(/\d+)?$", f"/{int(_worker[2:]) + 1}", os.environ["REDIS_URL"].rstrip("/"),
                                     count=1)

_workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT") or 1)
if _worker.startswith("gw") and _workers > 1 and "OMP_NUM_THREADS" not in os.environ:
    os.environ["OMP_NUM_THREADS"] = str(max(1, (os.cpu_count() or 1) // _workers))
