"""Engine benchmarks on the bundled model, all arms in one run, ratios printed side by side.

    .venv/bin/python bench/engine.py            # about 5-8 minutes on 2 CPU cores

1. Batched vs one-after-another decoding of 8 and 16 section requests, float32 and bfloat16.
2. One base + 4 LoRA adapters vs 4 merged model copies: resident memory (each arm in its own
   process) and throughput of one mixed-adapter batch.
3. 8 requests sharing a 512-token prefix: time to first token with prefix reuse vs recomputing.
4. int8 dynamic quantization vs float32: size on disk, prefill and decode latency, perplexity.

Greedy decoding throughout; outputs of arms that must agree are compared and the script fails
if they do not. It prints Markdown tables for bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import ctypes
import gc
import json
import os
import platform
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402

from agents.llm.bundled import bundled_model_dir  # noqa: E402
from agents.llm.loading import cpu_has_fast_bf16  # noqa: E402
from agents.llm.transformers_backend import TransformersEngine  # noqa: E402
from agents.llm.tuning import perplexity  # noqa: E402
from agents.llm.types import AdapterSpec, GenerationRequest  # noqa: E402

THREADS = 2
TOPICS = ["gulls", "terns", "puffins", "gannets", "guillemots", "kittiwakes", "cormorants", "shags",
          "fulmars", "razorbills", "oystercatchers", "curlews", "skuas", "eiders", "petrels", "shearwaters"]
BRIEF = ("You are a section writer on a team writing a field guide to coastal birds for walkers. "
         "Write clear, friendly prose with concrete details.")


def model_dir() -> Path:
    return bundled_model_dir(ROOT / "var" / "models")


def section_requests(n: int, max_new_tokens: int, prefix: str = "", adapters: list[AdapterSpec | None] | None = None):
    requests = []
    for i in range(n):
        system = BRIEF + (("\n\n" + prefix) if prefix else "")
        requests.append(GenerationRequest(
            id=f"s{i}", max_new_tokens=max_new_tokens,
            adapter=adapters[i % len(adapters)] if adapters else None,
            messages=[{"role": "system", "content": system},
                      {"role": "user", "content": f"Write the section about {TOPICS[i % len(TOPICS)]}: where to see "
                                                  f"them, how to recognise them and one surprising fact."}]))
    return requests


def run(engine: TransformersEngine, requests) -> tuple[dict[str, str], int, float, float]:
    """Texts, completion tokens, seconds, and seconds until every request had its first token."""
    texts: dict[str, str] = {}
    tokens, first_seen, started = 0, set(), time.perf_counter()
    all_first = 0.0
    for delta in engine.stream(requests):
        texts[delta.request_id] = texts.get(delta.request_id, "") + delta.text
        if delta.request_id not in first_seen:
            first_seen.add(delta.request_id)
            if len(first_seen) == len(requests):
                all_first = time.perf_counter() - started
        if delta.finished:
            if delta.finish_reason == "error":
                raise SystemExit(f"request {delta.request_id} failed: {delta.error}")
            tokens += delta.completion_tokens
    return texts, tokens, time.perf_counter() - started, all_first


def arm_batching(max_new_tokens: int) -> list[str]:
    rows = ["| dtype | requests | sequential tok/s | batched tok/s | speed-up | outputs equal |",
            "|---|---|---|---|---|---|"]
    for dtype in ("float32", "bfloat16"):
        engine = TransformersEngine(model_dir(), dtype=dtype)
        run(engine, section_requests(2, 4))  # warm up
        for n in (8, 16):
            requests = section_requests(n, max_new_tokens)
            seq_texts, seq_tokens, seq_s = {}, 0, 0.0
            for request in requests:
                texts, tokens, seconds, _ = run(engine, [request])
                seq_texts.update(texts)
                seq_tokens += tokens
                seq_s += seconds
            batch_texts, batch_tokens, batch_s, _ = run(engine, requests)
            equal = sum(seq_texts[k] == batch_texts[k] for k in seq_texts)
            if dtype == "float32" and equal != n:
                raise SystemExit(f"batched output differs from sequential in float32 ({equal}/{n} equal)")
            seq_rate, batch_rate = seq_tokens / seq_s, batch_tokens / batch_s
            rows.append(f"| {dtype} | {n} | {seq_rate:.1f} | {batch_rate:.1f} | {batch_rate / seq_rate:.1f}x | "
                        f"{equal}/{n} |")
            print(rows[-1], flush=True)
    return rows


def make_adapters(folder: Path, count: int = 4) -> list[AdapterSpec]:
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    specs = []
    for i in range(count):
        torch.manual_seed(100 + i)
        base = AutoModelForCausalLM.from_pretrained(model_dir())
        peft_model = get_peft_model(base, LoraConfig(r=16, lora_alpha=16, init_lora_weights=False,
                                                     target_modules=["q_proj", "k_proj", "v_proj", "o_proj"]))
        with torch.no_grad():
            for name, parameter in peft_model.named_parameters():
                if "lora_B" in name:
                    parameter.mul_(0.02)  # small, like a trained adapter: text changes but stays text
        path = folder / f"role{i}"
        peft_model.save_pretrained(path)
        specs.append(AdapterSpec(f"role{i}@1", str(path)))
        # The alternative to adapters: a full model copy per role with its adapter merged in.
        merged = folder / f"merged{i}"
        peft_model.merge_and_unload().save_pretrained(merged)
        for file in model_dir().iterdir():
            if not (merged / file.name).exists():  # tokenizer and chat template
                shutil.copy(file, merged / file.name)
    return specs


def memory_arm(kind: str, adapter_root: str, max_new_tokens: int) -> dict:
    """Runs in its own process: load what the arm needs, run its batch, report peak RSS."""
    import peft  # noqa: F401  (loaded in every arm, as in a worker, so only the adapters differ)

    torch.set_num_threads(THREADS)
    specs = [AdapterSpec(f"role{i}@1", str(Path(adapter_root) / f"role{i}")) for i in range(4)]
    result: dict = {"kind": kind}
    if kind in ("base", "adapters"):
        engine = TransformersEngine(model_dir(), dtype="auto")
        adapters = specs if kind == "adapters" else None
        requests = section_requests(8, max_new_tokens, adapters=adapters)
        run(engine, section_requests(2, 4, adapters=adapters))
        _, tokens, seconds, _ = run(engine, requests)
        result["tok_s"] = tokens / seconds
    else:  # four merged copies made beforehand, one per role, each serving its own two requests
        engines = [TransformersEngine(Path(adapter_root) / f"merged{i}", dtype="auto") for i in range(4)]
        requests = section_requests(8, max_new_tokens)
        tokens, seconds = 0, 0.0
        for i, engine in enumerate(engines):
            run(engine, requests[i:i + 1])
            _, t, s, _ = run(engine, requests[i::4])
            tokens, seconds = tokens + t, seconds + s
        result["tok_s"] = tokens / seconds
    gc.collect()
    ctypes.CDLL("libc.so.6").malloc_trim(0)  # hand freed batch buffers back, so RSS is what is live
    result["rss_mb"] = resident_mb()
    result["peak_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return result


def resident_mb() -> float:
    """Resident memory now (after the batch ran), not the peak: loading briefly holds two copies."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def arm_adapters(max_new_tokens: int) -> list[str]:
    with tempfile.TemporaryDirectory() as tmp:
        make_adapters(Path(tmp))
        results = {}
        for kind in ("base", "adapters", "copies"):
            output = subprocess.run([sys.executable, __file__, "--memory-arm", kind, "--adapter-root", tmp,
                                     "--tokens", str(max_new_tokens)], capture_output=True, text=True, check=True)
            results[kind] = json.loads(output.stdout.strip().splitlines()[-1])
    base = results["base"]
    rows = ["| arm | resident MB after the batch | vs base alone | peak MB | tok/s (8 requests) | vs base-only batch |",
            "|---|---|---|---|---|---|"]
    for kind, label in (("base", "base model alone"), ("adapters", "base + 4 adapters, one mixed batch"),
                        ("copies", "4 merged copies, each runs its own")):
        r = results[kind]
        rows.append(f"| {label} | {r['rss_mb']:.0f} | {r['rss_mb'] / base['rss_mb']:.2f}x | {r['peak_mb']:.0f} | "
                    f"{r['tok_s']:.1f} | {r['tok_s'] / base['tok_s']:.2f}x |")
        print(rows[-1], flush=True)
    return rows


def arm_prefix() -> list[str]:
    # A brief + outline of about 512 tokens, shared by all 8 requests.
    outline = "\n".join(f"{i + 1}. {t.title()}: where they nest, what they eat, how they fly, when to see them, "
                        f"and what walkers should avoid doing near them." for i, t in enumerate(TOPICS[:13]))
    prefix = "Outline of the whole guide, for context:\n" + outline
    rows = ["| dtype | shared prefix tokens | first token, recompute s | first token, reuse s | speed-up "
            "| outputs equal |", "|---|---|---|---|---|---|"]
    for dtype in ("float32", "bfloat16"):
        reuse = TransformersEngine(model_dir(), dtype=dtype)
        recompute = TransformersEngine(model_dir(), dtype=dtype, prefix_cache_tokens=0)
        requests = section_requests(8, 16, prefix=prefix)
        prompts = [reuse.prompt_ids(r) for r in requests]
        shared = next(i for i in range(min(map(len, prompts))) if len({p[i] for p in prompts}) > 1)
        run(reuse, section_requests(2, 2))
        run(recompute, section_requests(2, 2))
        slow_texts, _, _, slow_first = run(recompute, requests)
        fast_texts, _, _, fast_first = run(reuse, requests)
        equal = sum(slow_texts[k] == fast_texts[k] for k in slow_texts)
        if dtype == "float32" and equal != len(requests):
            raise SystemExit(f"prefix reuse changed the output in float32 ({equal}/8 equal)")
        rows.append(f"| {dtype} | {shared} | {slow_first:.2f} | {fast_first:.2f} | {slow_first / fast_first:.1f}x | "
                    f"{equal}/8 |")
        print(rows[-1], flush=True)
    return rows


def arm_int8() -> list[str]:
    text = (ROOT / "training" / "data" / "heldout.txt").read_text()
    rows = ["| model | size on disk MB | prefill 512 tokens s | decode ms/token | perplexity |",
            "|---|---|---|---|---|"]
    results = {}
    for label, options in (("float32", {"dtype": "float32"}), ("int8 dynamic", {"int8": True})):
        engine = TransformersEngine(model_dir(), **options)
        with tempfile.TemporaryDirectory() as tmp:
            torch.save(engine.model.state_dict(), f"{tmp}/weights.pt")
            size = os.path.getsize(f"{tmp}/weights.pt") / 1e6
        long_prompt = GenerationRequest(id="p", prompt=text[:2600], max_new_tokens=1)
        run(engine, [long_prompt])
        _, _, prefill_s, _ = run(engine, [long_prompt])
        decode = GenerationRequest(id="d", prompt="The harbour wakes", max_new_tokens=64)
        _, tokens, seconds, first = run(engine, [decode])
        decode_ms = (seconds - first) / max(1, tokens - 1) * 1000
        ppl = perplexity(engine.model, engine.tokenizer, text, window=512)
        results[label] = (size, prefill_s, decode_ms, ppl)
        rows.append(f"| {label} | {size:.0f} | {prefill_s:.2f} | {decode_ms:.1f} | {ppl:.2f} |")
        print(rows[-1], flush=True)
    f, q = results["float32"], results["int8 dynamic"]
    rows.append(f"| int8 / float32 | {q[0] / f[0]:.2f}x | {q[1] / f[1]:.2f}x | {q[2] / f[2]:.2f}x "
                f"| {q[3] / f[3]:.3f}x |")
    print(rows[-1], flush=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tokens", type=int, default=64, help="new tokens per section request")
    parser.add_argument("--memory-arm", choices=["base", "adapters", "copies"], help=argparse.SUPPRESS)
    parser.add_argument("--adapter-root", help=argparse.SUPPRESS)
    args = parser.parse_args()
    torch.set_num_threads(THREADS)
    if args.memory_arm:
        print(json.dumps(memory_arm(args.memory_arm, args.adapter_root, args.tokens)))
        return
    started = time.time()
    print(f"# Engine benchmark\n\n{platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
          f"{THREADS} torch threads, torch {torch.__version__}, fast bf16: {cpu_has_fast_bf16()}, "
          f"bundled SmolLM2-135M-Instruct, greedy, {args.tokens} new tokens per request\n", flush=True)
    sections = [("1. Batched vs sequential", arm_batching(args.tokens)),
                ("2. One base + 4 adapters vs 4 merged copies", arm_adapters(args.tokens)),
                ("3. 8 requests sharing a ~512-token prefix", arm_prefix()),
                ("4. int8 dynamic quantization vs float32", arm_int8())]
    print()
    for title, rows in sections:
        print(f"## {title}\n")
        print("\n".join(rows) + "\n")
    print(f"Total time: {time.time() - started:.0f} s")


if __name__ == "__main__":
    main()
