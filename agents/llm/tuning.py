"""The fastest safe engine setting for this machine, chosen once and remembered.

Which weights run fastest depends on the CPU (bench/RESULTS.md, issue 24's kernel table): on an
AVX2-only EPYC, bf16 products run 1-10x slower than float32 and fbgemm's int8 up to 4x faster at
one row; on a CPU with AVX-512 BF16/AMX, bf16 is fast. So at first start a worker loads each
candidate (float32; bf16 where the CPU has bf16 units; int8 where torch has fbgemm), times a few
decode steps of the serving core's own forward at 1 and 8 rows on a thread of its own (as the
core runs them) with 1 thread and with every physical core of the process's share, checks its
perplexity on held-out text against float32 (the quality gate: at most +2%), and keeps the
fastest that passes, with its thread count: on the AVX2 EPYC this was written on, two OpenMP
threads made the core's thread slower, not faster. The choice is stored per CPU model,
instruction set, torch version, core count and model folder in a JSON file under the data
folder, so the next start reads it; SCRIPTORIUM_LLM_DTYPE / SCRIPTORIUM_LLM_WEIGHTS force a
choice and skip all this.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import platform
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from agents.llm.kv_cache import SlotKVCache
from agents.llm.quantization import int8_available, quantize_int8
from agents.llm.threads import for_this_thread

log = logging.getLogger(__name__)

# The quality gate's text: ~2,900 tokens of expository prose written for it, never used to tune
# anything (SmoothQuant's alpha was picked on training/data/heldout.txt, calibration reads the
# bundled sources). 629 tokens could not resolve a ±2% gate (bench/RESULTS.md, issue 24).
GATE_TEXT = Path(__file__).resolve().parents[2] / "training" / "data" / "gate.txt"
MAX_PERPLEXITY_RISE = 0.02
FLAGS = ("avx2", "avx512f", "avx512_bf16", "amx_bf16", "avx512_vnni", "avx_vnni", "f16c")


@dataclass
class Choice:
    dtype: str  # float32 or bfloat16
    weights: str  # float or int8
    threads: int  # torch's intra-op threads for the serving core's thread
    tokens_per_s: dict[str, float] = field(default_factory=dict)  # candidate -> decode tokens/s
    perplexity: dict[str, float] = field(default_factory=dict)
    reason: str = ""

    @property
    def label(self) -> str:
        return "int8" if self.weights == "int8" else self.dtype


def process_cores() -> int:
    """Physical cores among the CPUs this process may run on (hyperthreads share one)."""
    cores = set()
    for cpu in os.sched_getaffinity(0):
        topology = Path(f"/sys/devices/system/cpu/cpu{cpu}/topology")
        try:
            cores.add((topology / "physical_package_id").read_text().strip() + ":" +
                      (topology / "core_id").read_text().strip())
        except OSError:
            cores.add(str(cpu))
    return max(1, len(cores))


def machine_key(folder: str | Path) -> str:
    """What the timings and the gate depend on: the CPU and its instruction sets, torch, threads,
    the model, the gate's text and bound."""
    try:
        info = Path("/proc/cpuinfo").read_text()
        model = next((line.split(":", 1)[1].strip() for line in info.splitlines() if line.startswith("model name")),
                     platform.processor())
        flags = next((set(line.split(":", 1)[1].split()) for line in info.splitlines() if line.startswith("flags")),
                     set())
    except OSError:
        model, flags = platform.processor() or platform.machine(), set()
    have = ",".join(flag for flag in FLAGS if flag in flags)
    gate = hashlib.sha256(GATE_TEXT.read_bytes()).hexdigest()[:12]
    return (f"{model} [{have}] torch {torch.__version__} cores {process_cores()} {Path(folder).resolve()} "
            f"gate {gate}+{MAX_PERPLEXITY_RISE}")


def candidates(fast_bf16: bool) -> list[tuple[str, str]]:
    found = [("float32", "float")]
    if fast_bf16:
        found.append(("bfloat16", "float"))
    if int8_available():
        found.append(("float32", "int8"))
    return found


def _load(folder: Path, dtype: str, weights: str):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(folder, dtype=getattr(torch, dtype)).eval()
    if weights == "int8":
        quantize_int8(model, AutoTokenizer.from_pretrained(folder))
    return model


def perplexity(model, tokenizer, text: str, window: int = 256) -> float:
    ids = tokenizer(text, return_tensors="pt").input_ids
    total, count = 0.0, 0
    with torch.inference_mode():
        for start in range(0, ids.shape[1] - 1, window):
            chunk = ids[:, start:start + window + 1]
            if chunk.shape[1] < 2:
                break
            logits = model(input_ids=chunk[:, :-1]).logits[0].float()
            total += float(torch.nn.functional.cross_entropy(logits, chunk[0, 1:], reduction="sum"))
            count += chunk.shape[1] - 1
    return math.exp(total / max(count, 1))


def decode_rate(model, rows: int, threads: int, steps: int = 6, context: int = 256) -> float:
    """Tokens/s of `steps` decode steps of `rows` rows over `context` cached positions, through
    the serving core's own forward (or transformers' where it has none), on a thread of its own
    with `threads` intra-op threads, as the serving core runs."""
    rate: list[float] = []
    worker = threading.Thread(target=lambda: rate.append(_decode_rate(model, rows, threads, steps, context)))
    worker.start()
    worker.join()
    if not rate:
        raise RuntimeError("timing the decode step failed (see the log)")
    return rate[0]


def _decode_rate(model, rows: int, threads: int, steps: int, context: int) -> float:
    for_this_thread(threads)
    from agents.llm.llama_step import LlamaStep, supports

    config = model.config
    heads = config.num_attention_heads
    kv = SlotKVCache(config.num_hidden_layers, getattr(config, "num_key_value_heads", heads),
                     getattr(config, "head_dim", None) or config.hidden_size // heads,
                     next(model.parameters()).dtype, "cpu")
    kv.reserve(rows, context + steps + 2)
    step = LlamaStep(model).forward if supports(model) else None
    at = torch.full((rows,), context)
    tokens = torch.zeros(rows, 1, dtype=torch.long)
    with torch.inference_mode():
        for n in range(steps + 2):  # two to warm up
            if n == 2:
                started = time.perf_counter()
            mask = kv.plan_decode(at)
            if step is not None:
                step(tokens, at[:, None], mask, kv, 1)
            else:
                model(input_ids=tokens, position_ids=at[:, None], attention_mask=mask, past_key_values=kv,
                      use_cache=True, logits_to_keep=1)
            at = at + 1
    return rows * steps / (time.perf_counter() - started)


def measure(folder: Path, fast_bf16: bool) -> Choice:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(folder)
    text = GATE_TEXT.read_text(encoding="utf-8")
    rates: dict[str, float] = {}
    perplexities: dict[str, float] = {}
    for dtype, weights in candidates(fast_bf16):
        name = "int8" if weights == "int8" else dtype
        model = _load(folder, dtype, weights)
        perplexities[name] = round(perplexity(model, tokenizer, text), 3)
        for threads in sorted({1, process_cores()}):
            # One row (a lone interactive request) and eight (writers in parallel), weighted alike.
            rate = math.sqrt(decode_rate(model, 1, threads) * decode_rate(model, 8, threads) / 8)
            rates[f"{name}/{threads}"] = round(rate, 2)
        del model
    base = perplexities["float32"]
    safe = {arm: rate for arm, rate in rates.items()
            if perplexities[arm.split("/")[0]] <= base * (1 + MAX_PERPLEXITY_RISE)}
    best = max(safe, key=lambda arm: safe[arm])
    name, count = best.split("/")
    reason = (f"{best} fastest of {', '.join(f'{n} {r:.1f} tok/s' for n, r in rates.items())} "
              f"(format/threads) within +{MAX_PERPLEXITY_RISE:.0%} of float32's perplexity {base:.2f}")
    return Choice("float32" if name == "int8" else name, "int8" if name == "int8" else "float", int(count),
                  rates, perplexities, reason)


def choose(folder: str | Path, store: Path, fast_bf16: bool) -> Choice:
    """The remembered choice for this machine and model, measured and stored on first call."""
    key = machine_key(folder)
    try:
        known = json.loads(store.read_text())
    except (OSError, ValueError):
        known = {}
    if isinstance(known.get(key), dict):
        try:
            return Choice(**known[key])
        except TypeError:
            pass  # written by another version: measure again
    log.info("timing the engine's settings on this machine (once): %s", key)
    choice = measure(Path(folder), fast_bf16)
    log.info("engine setting: %s (%s)", choice.label, choice.reason)
    known[key] = asdict(choice)
    store.parent.mkdir(parents=True, exist_ok=True)
    temporary = store.with_suffix(".tmp")
    temporary.write_text(json.dumps(known, indent=2) + "\n")
    temporary.replace(store)
    return choice
