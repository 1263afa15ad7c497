"""Where a decode step of the serving core goes (issue 24): wall time per step, and of it the
time in matrix products, in attention, in the other operators torch dispatches, and outside any
operator (Python, the scheduler, sampling), with the operators dispatched per step; at 1 and 16
rows and 1 and 2 threads, on the bundled model, in the dtype the engine picks here. All arms in
one run.

    .venv/bin/python bench/step_profile.py [--steps 48]     # about 2 minutes on 2 cores

Each arm decodes its rows from a short prompt, lets them warm up, then profiles `--steps` decode
steps with torch.profiler on the core's own thread (operators' self time there). The profiler
adds its own cost to every operator, so the split matters more than the total."""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402

from agents.llm.bundled import bundled_model_dir  # noqa: E402
from agents.llm.transformers_backend import TransformersEngine  # noqa: E402
from agents.llm.types import GenerationRequest  # noqa: E402

MATMUL = ("aten::mm", "aten::addmm", "aten::bmm", "aten::baddbmm", "aten::matmul", "aten::linear", "aten::_int_mm",
          "quantized::linear_dynamic", "mkldnn::_linear_pointwise")
ATTENTION = ("attention", "sdpa", "softmax")


class _Profiled:
    """Wraps the core's step: once `arm()` is called, the next `steps` decode steps run under
    torch.profiler on the core's own thread (the profiler records the thread it starts on)."""

    def __init__(self, core, steps: int, threads: int):
        self.core, self.steps, self.step, self.threads = core, steps, core._step, threads
        self.profile: torch.profiler.profile | None = None
        self.armed, self.first, self.wall = False, 0, 0.0
        self.done = __import__("threading").Event()
        core._step = self

    def arm(self) -> None:
        self.armed = True

    def __call__(self) -> None:
        if torch.get_num_threads() != self.threads:  # a thread's OpenMP team size is its own
            torch.set_num_threads(self.threads)
        if self.armed and self.profile is None:
            self.profile = torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU])
            self.profile.__enter__()
            self.first, self.started = self.core.stats.steps, time.perf_counter()
        self.step()
        if self.profile is not None and not self.done.is_set() and self.core.stats.steps - self.first >= self.steps:
            self.wall = time.perf_counter() - self.started
            self.profile.__exit__(None, None, None)
            self.done.set()


def _arm(engine: TransformersEngine, rows: int, threads: int, steps: int) -> dict[str, float]:
    warm = 16
    requests = [GenerationRequest(id=f"p{rows}-{threads}-{i}", messages=[{"role": "user", "content": f"Tides {i}."}],
                                  max_new_tokens=warm + steps + 64, min_new_tokens=warm + steps + 64,
                                  temperature=0.0) for i in range(rows)]
    profiled = _Profiled(engine.core, steps, threads)
    stream = engine.core.stream(requests)
    for seen, _delta in enumerate(stream, start=1):  # every row past its prefill and `warm` tokens
        if seen == rows * warm:
            profiled.arm()
        if profiled.done.is_set():
            break
    stream.close()  # cancels what still runs
    engine.core._step = profiled.step
    assert profiled.profile is not None
    self_us: Counter = Counter()
    calls = 0
    if os.environ.get("STEP_PROFILE_TABLE"):
        print(profiled.profile.key_averages().table(sort_by="count", row_limit=30))
    for event in profiled.profile.key_averages():
        name = event.key.lower()
        kind = "matmul" if event.key in MATMUL else "attention" if any(a in name for a in ATTENTION) else "other"
        self_us[kind] += event.self_cpu_time_total
        calls += event.count
    per_step = profiled.wall / steps * 1000
    ms = {kind: self_us[kind] / 1000 / steps for kind in ("matmul", "attention", "other")}
    return {"rows": rows, "threads": threads, "ms/step": per_step, "tokens/s": rows * steps / profiled.wall,
            "matmul ms": ms["matmul"], "attention ms": ms["attention"], "other ops ms": ms["other"],
            "outside ops ms": max(0.0, per_step - sum(ms.values())), "ops/step": calls / steps}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=48)
    parser.add_argument("--weights", choices=("float", "int8"), default="float")
    parser.add_argument("--eager", action="store_true", help="transformers' forward, not the core's own")
    args = parser.parse_args()
    engine = TransformersEngine(bundled_model_dir(ROOT / "var" / "models"), int8=args.weights == "int8",
                                fast_forward=not args.eager)
    try:
        results = [_arm(engine, rows, threads, args.steps) for rows in (1, 16) for threads in (1, 2)]
    finally:
        engine.close()
    print(f"{platform.processor() or platform.machine()}, torch {torch.__version__}, dtype {engine.dtype}, "
          f"weights {args.weights}, {'eager' if args.eager else 'own'} forward, "
          f"{args.steps} profiled decode steps per arm (operators' self time on the core's thread)\n")
    keys = list(results[0])
    print("| " + " | ".join(keys) + " |\n|" + "---|" * len(keys))
    for row in results:
        print("| " + " | ".join(f"{row[k]:.0f}" if k in ("rows", "threads", "ops/step") else f"{row[k]:.1f}"
                                for k in keys) + " |")


if __name__ == "__main__":
    main()
