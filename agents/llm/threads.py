"""Which threads of a serving process compute on more than one core: the serving core's alone.

torch's intra-op threads are an OpenMP (libgomp) team, and a team belongs to the thread that
starts it: the process's main thread gets one when it loads the model, each Celery task thread
one when it embeds a passage, the serving core one of its own. libgomp's idle team threads
spin-wait for the next parallel region only while the process holds no more of them than it has
CPUs; past that they sleep, and every region (a decode step runs hundreds) waits for them to
wake. On 2 cores an engine whose model was loaded by a 2-thread main thread ran its int8 products
2-4x slower at 2 threads than at 1 (`bench/omp_teams.py`); with every other thread at one
OpenMP thread, 2 threads beat 1. So a process that runs a serving core starts with
OMP_NUM_THREADS=1 (libgomp reads it when torch loads), and the core sets its own count
(`ServingCore(threads=...)`, SCRIPTORIUM_LLM_THREADS or the machine's choice) with
`for_this_thread`, which leaves threads started later at what they had. This module imports
torch only inside `for_this_thread`: `for_a_serving_process` must run before torch loads."""

from __future__ import annotations

import os
import threading
from collections.abc import MutableMapping

VARIABLE = "OMP_NUM_THREADS"


def for_a_serving_process(environ: MutableMapping[str, str] | None = None) -> MutableMapping[str, str]:
    """Give `environ` (this process's by default; a child's to be started) one OpenMP thread per
    thread unless the operator set a count, and return it."""
    environ = os.environ if environ is None else environ
    environ.setdefault(VARIABLE, "1")
    return environ


def shared_cores_warning(threads: int | None) -> str | None:
    """What to tell the operator when a core of `threads` threads shares the process with other
    threads' teams (OMP_NUM_THREADS not 1), or None."""
    if not threads or threads < 2 or os.environ.get(VARIABLE) == "1":
        return None
    return (f"the serving core runs {threads} threads, but {VARIABLE} is {os.environ.get(VARIABLE, 'unset')}: "
            "other threads' OpenMP teams then make libgomp put the core's threads to sleep between "
            f"products (steps up to 2-4x slower); start the process with {VARIABLE}=1 (the launcher does)")


def for_this_thread(count: int) -> None:
    """The calling thread's team `count` threads. torch.set_num_threads also sets the count that
    every thread started later takes at its first product (a Celery task's thread embedding a
    passage would build a team of `count` of its own); that one is set back, from a thread of
    its own, to what it was."""
    import torch

    others = torch.get_num_threads()  # this thread's first ask: what a new thread would start with
    torch.set_num_threads(count)
    if others != count:
        restore = threading.Thread(target=torch.set_num_threads, args=(others,), name="restore-omp-threads")
        restore.start()
        restore.join()
