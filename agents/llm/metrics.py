"""The serving core's numbers: what it counts as it runs, and the same in Prometheus' text format
(what /metrics answers)."""

from __future__ import annotations

import contextlib
import os
import re
import time
from collections import Counter, deque
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from agents.llm.serving import ServingCore

PREFIX = "scriptorium_llm_"
HELP = {
    "queue_length": "Requests waiting for a row",
    "rows_running": "Rows in the batch (decoding or prefilling)",
    "rows_prefilling": "Rows whose prompt is still being computed",
    "rows_max": "Most rows decoded together",
    "kv_tokens_used": "KV positions holding keys and values now",
    "kv_tokens_reserved": "KV positions reserved by running requests",
    "kv_tokens_budget": "KV positions the core may reserve",
    "kv_bytes_allocated": "Bytes of the KV buffers",
    "tokens_per_s": "Generated tokens per second over the last 10 s",
    "preemptions_total": "Rows given up to a more entitled request (resumed later)",
    "time_to_first_token_seconds": "Seconds from submission to the first token",
    "requests_finished_total": "Finished requests by reason",
}
HELP |= {
    "device_memory_used_bytes": "Memory this process holds on its device (CUDA: allocated by torch; CPU: resident)",
    "device_memory_reserved_bytes": "Memory torch's CUDA allocator has reserved",
    "device_memory_total_bytes": "The device's memory",
    "device_utilization_percent": "The GPU's busy time over the last sample period (NVML)",
    "load": "Rows running over the rows a batch may hold",
}
COUNTERS = re.compile(r".*_total$")
TTFT_BUCKETS = (0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0)


@dataclass
class CoreStats:
    requests: int = 0
    finished: Counter = field(default_factory=Counter)
    prompt_tokens: int = 0
    generated_tokens: int = 0
    prefill_tokens: int = 0
    preemptions: int = 0
    steps: int = 0
    ttft_count: int = 0
    ttft_sum: float = 0.0
    ttft_buckets: list[int] = field(default_factory=lambda: [0] * len(TTFT_BUCKETS))
    recent: deque = field(default_factory=lambda: deque(maxlen=4096))  # (time, tokens) of decode steps

    def first_token(self, seconds: float) -> None:
        self.ttft_count += 1
        self.ttft_sum += seconds
        for i, bound in enumerate(TTFT_BUCKETS):
            if seconds <= bound:
                self.ttft_buckets[i] += 1

    def tokens_per_s(self, window_s: float = 10.0) -> float:
        now = time.monotonic()
        recent = [(t, n) for t, n in list(self.recent) if now - t <= window_s]
        if len(recent) < 2:
            return 0.0
        return sum(n for _, n in recent[1:]) / max(1e-6, recent[-1][0] - recent[0][0])


def device_name(device: str) -> str:
    """The device a core runs on, as people name it: "cuda:0 (NVIDIA H200)", "cpu (AMD EPYC ...)"."""
    import torch

    if device.startswith("cuda") and torch.cuda.is_available():
        index = torch.device(device).index or 0
        return f"cuda:{index} ({torch.cuda.get_device_name(index)})"
    model = ""
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as cpuinfo:
        model = next((line.split(":", 1)[1].strip() for line in cpuinfo if line.startswith("model name")), "")
    return f"cpu ({model})" if model else "cpu"


def device_metrics(device: str) -> dict[str, float]:
    """The memory this process holds on its device, the device's size, and (on a GPU, where NVML
    answers) how busy it is."""
    import torch

    if device.startswith("cuda") and torch.cuda.is_available():
        index = torch.device(device).index or 0
        free, total = torch.cuda.mem_get_info(index)
        values = {"device_memory_used_bytes": float(torch.cuda.memory_allocated(index)),
                  "device_memory_reserved_bytes": float(torch.cuda.memory_reserved(index)),
                  "device_memory_total_bytes": float(total)}
        with contextlib.suppress(Exception):  # NVML (pynvml) is optional
            values["device_utilization_percent"] = float(torch.cuda.utilization(index))
        return values
    page = os.sysconf("SC_PAGE_SIZE")
    with open("/proc/self/statm") as statm:
        resident = int(statm.read().split()[1]) * page
    return {"device_memory_used_bytes": float(resident),
            "device_memory_total_bytes": float(os.sysconf("SC_PHYS_PAGES") * page)}


def prometheus_text(metrics: dict[str, float], labels: dict[str, str] | None = None) -> str:
    base = ",".join(f'{k}="{_escape(v)}"' for k, v in sorted((labels or {}).items()))
    lines, declared = [], set()

    def declare(name: str, kind: str) -> None:
        if name not in declared:
            declared.add(name)
            lines.append(f"# HELP {PREFIX}{name} {HELP.get(name, name.replace('_', ' '))}")
            lines.append(f"# TYPE {PREFIX}{name} {kind}")

    def sample(name: str, value: float, extra: str = "") -> None:
        label = ",".join(part for part in (base, extra) if part)
        lines.append(f"{PREFIX}{name}{{{label}}} {value}" if label else f"{PREFIX}{name} {value}")

    histogram = "time_to_first_token_seconds"
    for key, value in metrics.items():
        if key.startswith(histogram) or isinstance(value, str):  # text (the device's name) goes in labels
            continue
        if key.startswith("requests_finished_total_"):
            declare("requests_finished_total", "counter")
            sample("requests_finished_total", value, f'reason="{key.rsplit("_", 1)[-1]}"')
            continue
        declare(key, "counter" if COUNTERS.match(key) else "gauge")
        sample(key, value)
    if f"{histogram}_count" in metrics:
        declare(histogram, "histogram")
        for key, value in metrics.items():
            if key.startswith(f"{histogram}_bucket_le_"):
                sample(f"{histogram}_bucket", value, f'le="{key.rsplit("_", 1)[-1]}"')
        sample(f"{histogram}_bucket", metrics[f"{histogram}_count"], 'le="+Inf"')
        sample(f"{histogram}_sum", metrics[f"{histogram}_sum"])
        sample(f"{histogram}_count", metrics[f"{histogram}_count"])
    return "\n".join(lines) + "\n"


def _escape(value: str) -> str:
    return str(value).replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def core_metrics(core: ServingCore) -> dict[str, float]:
    """The core's numbers now (its caller holds the core's lock): queue, rows, KV memory, totals."""
    stats, rows = core.stats, core.rows
    values: dict[str, float] = {
        "queue_length": len(core.waiting), "rows_running": len(rows),
        "rows_prefilling": len(rows) - core.decoding, "rows_max": core.max_rows,
        "kv_tokens_used": sum(s.length for s in rows), "kv_tokens_reserved": sum(s.reserve for s in rows),
        "kv_tokens_budget": core.kv_budget, "kv_bytes_allocated": core.kv.bytes,
        "requests_total": stats.requests, "prompt_tokens_total": stats.prompt_tokens,
        "prefill_tokens_total": stats.prefill_tokens, "generated_tokens_total": stats.generated_tokens,
        "preemptions_total": stats.preemptions, "decode_steps_total": stats.steps,
        "tokens_per_s": round(stats.tokens_per_s(), 2),
        "time_to_first_token_seconds_sum": round(stats.ttft_sum, 4),
        "time_to_first_token_seconds_count": stats.ttft_count,
        "prefix_cache_tokens": core.prefixes.tokens, "prefix_cache_hits_total": core.prefixes.hits,
        "prefix_cache_hit_tokens_total": core.prefixes.hit_tokens,
        "load": round(len(rows) / core.max_rows, 3),
    }
    for bound, count in zip(TTFT_BUCKETS, stats.ttft_buckets, strict=True):
        values[f"time_to_first_token_seconds_bucket_le_{bound:g}"] = count
    for reason, count in stats.finished.items():
        values[f"requests_finished_total_{reason}"] = count
    return values
