"""Why only the serving core may hold a team of several OpenMP threads (agents/llm/threads.py).

One row through an int8 product of the bundled model's MLP shape (576 -> 1536, fbgemm), timed in
a thread of its own (as the serving core runs) at 1 and 2 threads, in three kinds of process,
each a child of its own, side by side:
- "main team": the main thread computed on every core first (a model load), so it keeps an idle
  team; libgomp then holds more threads than CPUs and stops spin-waiting;
- "one thread elsewhere": OMP_NUM_THREADS=1 for the process (what the launcher gives an agents
  worker), the timed thread alone takes more (threads.for_this_thread);
- "a task thread too": as the last, plus a second thread (a Celery task's) computing once after
  the timed thread set its count with threads.for_this_thread;
- "a task thread, set_num_threads": the same with torch.set_num_threads, whose count every later
  thread takes: the task's thread builds a team of its own.

    .venv/bin/python bench/omp_teams.py          # ~1 minute
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def _product_us(threads: int, task_thread: bool, plain: bool) -> float:
    import warnings

    import torch

    from agents.llm.quantization import Int8Linear
    from agents.llm.threads import for_this_thread

    warnings.filterwarnings("ignore")
    layer, row = Int8Linear.from_float(torch.randn(1536, 576)), torch.randn(1, 576)
    result: list[float] = []

    def timed() -> None:
        (torch.set_num_threads if plain else for_this_thread)(threads)
        done, computed = threading.Event(), threading.Event()
        if task_thread:  # a pool thread: computes once, then lives on (and so does any team it built)
            threading.Thread(target=lambda: (layer(row), computed.set(), done.wait())).start()
            computed.wait()
        for _ in range(300):
            layer(row)
        best = float("inf")
        for _ in range(5):
            started = time.perf_counter()
            for _ in range(1000):
                layer(row)
            best = min(best, (time.perf_counter() - started) / 1000 * 1e6)
        done.set()
        result.append(best)

    core = threading.Thread(target=timed)
    core.start()
    core.join()
    return result[0]


def _child(arm: str) -> dict[str, float]:
    import torch

    if arm == "main team":
        square = torch.randn(1500, 1500)
        square @ square  # the main thread's own team, as a model load leaves it
    return {str(n): _product_us(n, task_thread=arm.startswith("a task thread"), plain=arm.endswith("set_num_threads"))
            for n in (1, 2)}


def main() -> None:
    if len(sys.argv) > 2 and sys.argv[1] == "--arm":
        print(json.dumps(_child(sys.argv[2])))
        return
    info = Path("/proc/cpuinfo").read_text()
    cpu = next((line.split(":", 1)[1].strip() for line in info.splitlines() if line.startswith("model name")), "?")
    print(f"CPU: {cpu}; {os.cpu_count()} CPUs; one row, int8 576 -> 1536, best of 5 x 1000, microseconds\n")
    print("| process | 1 thread | 2 threads | 2 vs 1 |\n|---|---|---|---|")
    base = {k: v for k, v in os.environ.items() if k != "OMP_NUM_THREADS"}
    for arm, env in (("main team", base), ("one thread elsewhere", dict(base, OMP_NUM_THREADS="1")),
                     ("a task thread too", dict(base, OMP_NUM_THREADS="1")),
                     ("a task thread, set_num_threads", dict(base, OMP_NUM_THREADS="1"))):
        done = subprocess.run([sys.executable, __file__, "--arm", arm], env=env, capture_output=True, text=True,
                              check=True)
        us = json.loads(done.stdout.splitlines()[-1])
        print(f"| {arm} | {us['1']:.0f} | {us['2']:.0f} | {us['1'] / us['2']:.2f}x |", flush=True)


if __name__ == "__main__":
    main()
