"""Serving benchmarks: the serving core against the static per-task batches it replaced, and
against llama.cpp on the same cores. All arms in one run; ratios printed side by side.

    .venv/bin/python bench/serving.py [--llamacpp DIR] [--quick]    # about 9 minutes on 2 cores
    .venv/bin/python bench/serving.py --device cuda                   # the GPU arm only

1. Four runs of 6 sections (300 to 400 words) started 10 s apart on one worker: each run's time
   from approval to its first streamed token, its wall time, and aggregate tokens/s; the core
   (every run's writers in one continuous batch) vs static batches (one run's batch at a time,
   as a solo worker ran them). The section writer is the real one (continuation rounds and all).
2. A one-section rewrite (interactive) submitted while a 16-section run writes: its first token.
3. Long sections: 16 requests of 900 new tokens; tokens/s over the first and the last 100.
4. llama.cpp (`llama-batched-bench`, the bundled Q4_1 GGUF, same threads) on the same 16 x 900,
   and one stream; built by ../shared/tools/build-llamacpp.sh. Skipped when it is not built.
5. --device cuda: 64 concurrent section requests, tokens/s and time to first token.
"""

from __future__ import annotations

import argparse
import os
import platform
import re
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402

from agents import coordinator  # noqa: E402
from agents.llm.bundled import bundled_model_dir, gguf_path  # noqa: E402
from agents.llm.loading import cpu_has_fast_bf16  # noqa: E402
from agents.llm.transformers_backend import TransformersEngine  # noqa: E402
from agents.llm.types import BULK, INTERACTIVE, GenerationRequest  # noqa: E402
from agents.outline import Brief, PlannedSection  # noqa: E402
from bench.static_batches import StaticBatches  # noqa: E402

THREADS = 2
TOPICS = ["lighthouses", "tides", "salt marshes", "sea caves"]
HEADINGS = ["Origins", "How it works", "Famous examples", "Dangers", "People", "Today"]


class Counted:
    """Passes requests to an engine, stamping group and priority, and records each run's tokens
    and when its first text arrived."""

    def __init__(self, engine, group: str, priority: int = BULK):
        self.engine, self.group, self.priority = engine, group, priority
        self.tokens, self.first_text = 0, None

    def stream(self, requests, cancel=None):
        for request in requests:
            request.group, request.priority = self.group, self.priority
        for delta in self.engine.stream(requests, cancel):
            if delta.text and self.first_text is None:
                self.first_text = time.monotonic()
            if delta.finished:
                if delta.finish_reason == "error":
                    raise SystemExit(f"{delta.request_id} failed: {delta.error}")
                self.tokens += delta.completion_tokens
            yield delta


def write_run(engine, topic: str, words: list[int]) -> dict:
    brief = Brief(topic=f"A short history of {topic}", target_words=sum(words), audience="curious readers")
    sections = [PlannedSection(h, f"{h} of {topic}", [], w) for h, w in zip(HEADINGS, words, strict=True)]
    tasks = coordinator.writer_tasks(sections)
    started = time.monotonic()
    counted = Counted(engine, f"run-{topic}")
    written = coordinator.write(counted, brief, sections, tasks)
    return {"topic": topic, "started": started, "first": counted.first_text - started,
            "wall": time.monotonic() - started, "tokens": counted.tokens,
            "words": sum(w.words for w in written.values())}


def arm_runs(model: Path, spacing_s: float, words: list[int]) -> list[str]:
    results = {}
    for label in ("static batches (before)", "serving core"):
        engine = TransformersEngine(model, **ENGINE)
        served = StaticBatches(engine) if label.startswith("static") else engine
        write_run(served, "warm-up", [40] * len(words))
        outcome: list[dict] = []
        threads = []
        for i, topic in enumerate(TOPICS):
            thread = threading.Thread(target=lambda t=topic, o=outcome, e=served: o.append(write_run(e, t, words)))
            thread.start()
            threads.append(thread)
            if i < len(TOPICS) - 1:
                time.sleep(spacing_s)
        for thread in threads:
            thread.join()
        engine.close()
        span = max(r["started"] + r["wall"] for r in outcome) - min(r["started"] for r in outcome)
        results[label] = (sorted(outcome, key=lambda r: r["started"]), sum(r["tokens"] for r in outcome) / span)
        print(label, [(r["topic"], round(r["first"], 1), round(r["wall"], 1), r["tokens"]) for r in outcome],
              flush=True)
    rows = ["| arm | run | first token s | wall s | tokens | words |", "|---|---|---|---|---|---|"]
    for label, (outcome, _) in results.items():
        for r in outcome:
            rows.append(f"| {label} | {r['topic']} | {r['first']:.1f} | {r['wall']:.1f} | {r['tokens']} "
                        f"| {r['words']} |")
    before, after = results["static batches (before)"][1], results["serving core"][1]
    worst_first = max(r["first"] for r in results["serving core"][0])
    rows += ["", "| arm | aggregate tokens/s | vs before | worst first token s |", "|---|---|---|---|",
             f"| static batches (before) | {before:.1f} | 1.00x | "
             f"{max(r['first'] for r in results['static batches (before)'][0]):.1f} |",
             f"| serving core | {after:.1f} | {after / before:.2f}x | {worst_first:.1f} |"]
    return rows


def section_requests(engine, count: int, tokens: int, prefix: str = "s", **extra) -> list[GenerationRequest]:
    brief = Brief(topic="A field guide to the coast", target_words=count * 300, audience="walkers")
    sections = [PlannedSection(f"Part {i + 1}", f"{TOPICS[i % 4]} {i}", [], 300) for i in range(count)]
    return [GenerationRequest(id=f"{prefix}{i}", max_new_tokens=tokens, min_new_tokens=tokens, repetition_penalty=1.15,
                              messages=coordinator.writer_prompt(brief, sections, task), **extra)
            for i, task in enumerate(coordinator.writer_tasks(sections))]


def arm_rewrite(model: Path) -> list[str]:
    engine = TransformersEngine(model, **ENGINE)
    bulk = section_requests(engine, 16, 300, group="run-big", priority=BULK)
    outs = [engine.core.submit(r) for r in bulk]
    time.sleep(5)  # the run is writing
    rewrite = section_requests(engine, 1, 120, prefix="rewrite", group="run-rewrite", priority=INTERACTIVE)[0]
    submitted = time.monotonic()
    out = engine.core.submit(rewrite)
    first = None
    while True:
        delta = out.get()
        if delta.text and first is None:
            first = time.monotonic() - submitted
        if delta.finished:
            break
    running = engine.core.metrics()["rows_running"]
    for r in bulk:
        engine.core.cancel(r.id)
    for o in outs:
        while not o.get().finished:
            pass
    engine.close()
    return ["| arm | rows busy | rewrite's first token s | target |", "|---|---|---|---|",
            f"| rewrite during a 16-section run | {running} | {first:.2f} | 2 s |"]


def arm_long(model: Path, rows: int, tokens: int) -> tuple[list[str], float]:
    engine = TransformersEngine(model, **ENGINE)
    list(engine.stream(section_requests(engine, 2, 4)))  # warm up
    requests = section_requests(engine, rows, tokens)
    progress = {r.id: 0 for r in requests}
    marks: dict[int, float] = {}
    started = time.monotonic()
    for delta in engine.stream(requests):
        progress[delta.request_id] = delta.completion_tokens
        low = min(progress.values())
        for mark in (1, 101, tokens - 100, tokens):
            if low >= mark and mark not in marks:
                marks[mark] = time.monotonic()
    total = time.monotonic() - started
    metrics = engine.core.metrics()
    engine.close()
    first = rows * 100 / (marks[101] - marks[1])
    last = rows * 100 / (marks[tokens] - marks[tokens - 100])
    overall = rows * tokens / total
    decode = rows * (tokens - 1) / (marks[tokens] - marks[1])  # after every row's first token, as llama.cpp's S_TG
    return ([f"| {rows} x {tokens} | {first:.1f} | {last:.1f} | {last / first:.2f} | {decode:.1f} | {overall:.1f} | "
             f"{metrics['kv_bytes_allocated'] / 2**20:.0f} |"], decode)


def arm_llamacpp(folder: Path, rows: int, tokens: int, prompt: int) -> tuple[list[str], float | None]:
    bench = folder / "bin" / "llama-batched-bench"
    if not bench.exists():
        return [f"| llama.cpp | not built ({bench} missing: run ../shared/tools/build-llamacpp.sh {folder}) |"], None
    out = []
    rates = {}
    for batch in (1, rows):
        result = subprocess.run([str(bench), "-m", str(gguf_path()), "-c", str(batch * (prompt + tokens) + 64),
                                 "-b", "2048", "-ub", "512", "-npp", str(prompt), "-ntg", str(tokens),
                                 "-npl", str(batch), "-t", str(THREADS)], capture_output=True, text=True,
                                env=dict(os.environ, LD_LIBRARY_PATH=str(folder / "bin")))
        line = next((row for row in result.stdout.splitlines() if re.match(rf"\|\s+{prompt}\s+\|", row)), None)
        if line is None:
            raise SystemExit(f"llama-batched-bench printed no result:\n{result.stdout[-2000:]}{result.stderr[-2000:]}")
        cells = [c.strip() for c in line.strip("|").split("|")]
        rates[batch] = float(cells[7])  # S_TG t/s: decode tokens per second over all streams
        out.append(f"| llama.cpp Q4_1, {batch} x {tokens} | decode {rates[batch]:.1f} tok/s | "
                   f"prefill {float(cells[5]):.1f} tok/s |")
    return out, rates[rows]


def arm_gpu(model: Path, device: str) -> list[str]:
    engine = TransformersEngine(model, device=device, max_rows=64, kv_budget_tokens=64 * 1024)
    list(engine.stream(section_requests(engine, 2, 4)))
    requests = section_requests(engine, 64, 256)
    started, firsts, tokens = time.monotonic(), {}, 0
    for delta in engine.stream(requests):
        if delta.request_id not in firsts:
            firsts[delta.request_id] = time.monotonic() - started
        if delta.finished:
            tokens += delta.completion_tokens
    seconds = time.monotonic() - started
    ordered = sorted(firsts.values())
    return ["| device | requests | tokens/s | first token p50 s | p95 s |", "|---|---|---|---|---|",
            f"| {device} ({torch.cuda.get_device_name(0) if device.startswith('cuda') else device}) | 64 | "
            f"{tokens / seconds:.1f} | {ordered[len(ordered) // 2]:.2f} | {ordered[int(len(ordered) * 0.95)]:.2f} |"]


ENGINE: dict = {}  # engine options every arm shares (--weights)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--llamacpp", type=Path, default=ROOT.parent / "llamacpp",
                        help="folder where build-llamacpp.sh put llama.cpp (bin/llama-batched-bench)")
    parser.add_argument("--quick", action="store_true", help="smaller sizes, to check the script")
    parser.add_argument("--weights", choices=("auto", "int8"), default="auto",
                        help="int8: the Linears in int8 but the down-projections (agents/llm/quantization.py); "
                             "auto: the dtype auto picks")
    args = parser.parse_args()
    ENGINE.update(int8=args.weights == "int8")
    torch.set_num_threads(THREADS)
    model = bundled_model_dir(ROOT / "var" / "models")
    if args.device != "cpu":
        print("\n".join(arm_gpu(model, args.device)))
        return
    started = time.monotonic()
    words = [150, 200, 150, 200, 150, 200] if args.quick else [300, 300, 350, 350, 400, 400]
    long_tokens = 300 if args.quick else 900
    print(f"{platform.machine()}, {THREADS} torch threads, torch {torch.__version__}, "
          f"{'int8' if args.weights == 'int8' else 'bf16' if cpu_has_fast_bf16() else 'float32'}, "
          "bundled SmolLM2-135M-Instruct\n", flush=True)
    tables = ["### 1. Four runs of 6 sections, started 10 s apart, one worker", ""]
    tables += arm_runs(model, 2.0 if args.quick else 10.0, words)
    tables += ["", "### 2. A one-section rewrite during a 16-section run", ""] + arm_rewrite(model)
    long_rows, ours = arm_long(model, 16, long_tokens)
    tables += ["", "### 3. Long sections (serving core)", "",
               "| rows x new tokens | tok/s, first 100 | tok/s, last 100 | last / first | decode tok/s "
               "| with prefill tok/s | KV MB |", "|---|---|---|---|---|---|---|"] + long_rows
    peer_rows, peer = arm_llamacpp(args.llamacpp, 16, long_tokens, 150)
    tables += ["", "### 4. llama.cpp on the same cores (llama-batched-bench, 150-token prompts)", "",
               "| arm | decode | prefill |", "|---|---|---|"] + peer_rows
    if peer:
        tables += ["", f"Serving core / llama.cpp, 16 x {long_tokens} aggregate decode: {ours:.1f} / {peer:.1f} = "
                       f"{ours / peer:.2f}x (target 1.5x)"]
    tables += ["", f"Whole script: {time.monotonic() - started:.0f} s"]
    print("\n" + "\n".join(tables))


if __name__ == "__main__":
    main()
