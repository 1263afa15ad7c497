"""The engine against llama.cpp on the same cores (issue 24): the engine as it was (transformers'
forward, float32), the core's own forward in float32, and the own forward on int8 weights, at 1
and 2 threads, each arm in a process of its own, all in one run, ratios side by side.

    .venv/bin/python bench/engine_limit.py [--llamacpp DIR] [--quick]     # ~12 minutes on 2 cores

Workloads (the bundled SmolLM2-135M, greedy; llama.cpp: llama-batched-bench on the bundled Q4_1
GGUF, built by ../shared/tools/build-llamacpp.sh):
- 1 x 128: one stream, decode tokens/s after a 128-token prompt;
- 16 x (256 + 128): sixteen prompts of 256 tokens, 128 new each; generated tokens/s over the
  whole, prefill included (what a run's writers see);
- 8 x 900: eight rows writing 900 tokens each; decode tokens/s, and the rate over tokens
  800-900 against tokens 100-200 (what a long section costs as its cache grows).
The serving core sets its own thread's intra-op threads (an OpenMP team is per thread), and each
arm's process starts with OMP_NUM_THREADS=1 as an agents worker does (agents/llm/threads.py).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from agents.llm.threads import for_a_serving_process  # noqa: E402  (no torch)

ARMS = {"before": dict(dtype="float32", fast_forward=False), "own float32": dict(dtype="float32"),
        "own int8": dict(int8=True)}
if "avx512_bf16" in Path("/proc/cpuinfo").read_text() or "amx_bf16" in Path("/proc/cpuinfo").read_text():
    ARMS["own bfloat16"] = dict(dtype="bfloat16")  # what the engine's plain auto dtype picks on such a CPU


def _prompt(tokenizer, i: int, length: int) -> str:
    words = f"Row {i}. The sea and its tides, the moon and the coast, the gulls and the boats. " * 40
    return tokenizer.decode(tokenizer(words).input_ids[:length])


def _run(engine, rows: int, prompt: int, new: int) -> dict[str, float]:
    from agents.llm.types import GenerationRequest

    requests = [GenerationRequest(id=f"r{i}-{time.monotonic()}", prompt=_prompt(engine.tokenizer, i, prompt),
                                  max_new_tokens=new, min_new_tokens=new, temperature=0.0) for i in range(rows)]
    counts: dict[str, int] = {}
    marks: dict[int, float] = {}  # tokens written by every row -> when
    firsts: dict[str, float] = {}
    started = time.perf_counter()
    for delta in engine.stream(requests):
        now = time.perf_counter()
        firsts.setdefault(delta.request_id, now)
        counts[delta.request_id] = delta.completion_tokens
        if len(counts) == rows:
            marks.setdefault(min(counts.values()), now)
    ended = time.perf_counter()
    decode = rows * (new - 1) / (ended - max(firsts.values()))
    rate = {"decode": decode, "generated": rows * new / (ended - started)}
    if new >= 900:
        def window(a: int, b: int) -> float:
            return rows * (b - a) / (marks[b] - marks[a])
        rate["late/early"] = window(800, 900) / window(100, 200)
    return rate


def _arm(name: str, threads: int, quick: bool) -> dict:
    from agents.llm.bundled import bundled_model_dir
    from agents.llm.transformers_backend import TransformersEngine

    engine = TransformersEngine(bundled_model_dir(ROOT / "var" / "models"), prefix_cache_tokens=0, threads=threads,
                                **ARMS[name])
    _run(engine, 2, 32, 8)  # warm up
    result = {"1x128": _run(engine, 1, 128, 128)["decode"],
              "16x(256+128)": _run(engine, 16, 256, 128)["generated"]}
    if not quick:
        long = _run(engine, 8, 32, 900)
        result |= {"8x900": long["decode"], "late/early": long["late/early"]}
    engine.close()
    return result


def _llamacpp(folder: Path, threads: int, quick: bool) -> dict | None:
    from agents.llm.bundled import gguf_path

    bench = folder / "bin" / "llama-batched-bench"
    if not bench.exists():
        return None

    def run(prompt: int, new: int, rows: int) -> list[str]:
        out = subprocess.run([str(bench), "-m", str(gguf_path()), "-c", str(rows * (prompt + new) + 64), "-b", "2048",
                              "-ub", "512", "-npp", str(prompt), "-ntg", str(new), "-npl", str(rows), "-t",
                              str(threads)], capture_output=True, text=True,
                             env=dict(os.environ, LD_LIBRARY_PATH=str(folder / "bin"))).stdout
        line = next(row for row in out.splitlines() if re.match(rf"\|\s+{prompt}\s+\|\s+{new}\s+\|", row))
        return [c.strip() for c in line.strip("|").split("|")]

    one = run(128, 128, 1)
    many = run(256, 128, 16)
    result = {"1x128": float(one[7]), "16x(256+128)": 16 * 128 / float(many[8])}
    if not quick:
        result["8x900"] = float(run(32, 900, 8)[7])
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--llamacpp", type=Path, default=ROOT.parent / "llamacpp")
    parser.add_argument("--quick", action="store_true", help="leave out the 8 x 900 workload")
    parser.add_argument("--arm", nargs=2, help=argparse.SUPPRESS)  # name threads, in a child process
    args = parser.parse_args()
    if args.arm:
        print(json.dumps(_arm(args.arm[0], int(args.arm[1]), args.quick)))
        return
    info = Path("/proc/cpuinfo").read_text()
    cpu = next((line.split(":", 1)[1].strip() for line in info.splitlines() if line.startswith("model name")),
               platform.processor())
    print(f"CPU: {cpu}; AVX2 {'avx2' in info}, AVX-512 {'avx512f' in info}, AVX-512 BF16 {'avx512_bf16' in info}\n")
    loads = ["1x128", "16x(256+128)"] + ([] if args.quick else ["8x900", "late/early"])
    print("| arm | threads | " + " | ".join(loads) + " | " +
          " | ".join(f"{w} vs llama.cpp" for w in loads if w != "late/early") + " |")
    print("|---|---|" + "---|" * (2 * len(loads) - (0 if args.quick else 1)))
    for threads in (1, 2):
        peer = _llamacpp(args.llamacpp, threads, args.quick)
        if peer is not None:
            print(f"| llama.cpp Q4_1 | {threads} | " + " | ".join(f"{peer[w]:.1f}" if w in peer else "–" for w in loads)
                  + " |" + " |" * (len(loads) - (0 if args.quick else 1)), flush=True)
        for name in ARMS:
            command = [sys.executable, __file__, "--arm", name, str(threads)] + (["--quick"] if args.quick else [])
            done = subprocess.run(command, capture_output=True, text=True, env=for_a_serving_process(dict(os.environ)))
            if done.returncode:
                print(f"| {name} | {threads} | failed: {done.stderr.strip().splitlines()[-1]} |", flush=True)
                continue
            ours = json.loads(done.stdout.split("\n")[-2])
            ratios = [f"{ours[w] / peer[w]:.2f}x" if peer else "–" for w in loads if w != "late/early"]
            print(f"| {name} | {threads} | " + " | ".join(f"{ours[w]:.2f}" if w == "late/early" else f"{ours[w]:.1f}"
                                                         for w in loads) + " | " + " | ".join(ratios) + " |",
                  flush=True)


if __name__ == "__main__":
    main()
