"""What the writers' sentence search asks of the engine, per row, against a plain row and against
llama.cpp on the same cores: one stream and 8 rows of 128 new tokens after a 128-token prompt,
at 1 and 2 threads, all arms in one run, ratios printed side by side.

    .venv/bin/python bench/sentence_rows.py [--llamacpp DIR]     # about 3 minutes on 2 cores

Arms (the bundled SmolLM2-135M, greedy):
- plain: a request as any role sends it.
- search row: the options a search step's candidate carries (no_repeat_ngrams=6 over its draft,
  block_ngrams=4 against 300 words of siblings' text, logprobs); `sentences` is left out so
  every arm writes the same number of tokens.
- llama.cpp: `llama-batched-bench` on the bundled Q4_1 GGUF (../shared/tools/build-llamacpp.sh).
Each arm runs in a process of its own, so torch's thread count is the arm's.
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

PROMPT_WORDS, NEW_TOKENS = 90, 128
SIBLINGS = ("Gulls nest on cliffs and roofs along the coast, and they eat almost anything they find. " * 18)


def _arm(kind: str, rows: int, threads: int) -> float:
    """Decode tokens per second of `rows` rows of NEW_TOKENS (after every row's first token)."""
    import torch

    torch.set_num_threads(threads)
    from agents.llm.bundled import bundled_model_dir
    from agents.llm.transformers_backend import TransformersEngine
    from agents.llm.types import GenerationRequest

    engine = TransformersEngine(bundled_model_dir(ROOT / "var" / "models"), prefix_cache_tokens=0)
    draft = " ".join(["The tide comes in twice a day along most of the coast."] * 4)
    extra = dict(no_repeat_ngrams=6, block_ngrams=4, avoid=(SIBLINGS,), logprobs=True,
                 assistant_prefix=draft) if kind == "search" else {}

    def batch(tag: str) -> list:
        return [GenerationRequest(id=f"{tag}-{i}", max_new_tokens=NEW_TOKENS, min_new_tokens=NEW_TOKENS, messages=[
            {"role": "user", "content": f"Row {i}. " + "Write about the sea and its tides. " * (PROMPT_WORDS // 7)}],
            **extra) for i in range(rows)]
    for _ in engine.stream(batch("warm")):
        pass
    firsts: dict[str, float] = {}
    last = 0.0
    for delta in engine.stream(batch("run")):
        now = time.perf_counter()
        firsts.setdefault(delta.request_id, now)
        last = now
    engine.close()
    return rows * (NEW_TOKENS - 1) / (last - max(firsts.values()))


def _llamacpp(folder: Path, rows: int, threads: int) -> float | None:
    from agents.llm.bundled import gguf_path

    bench = folder / "bin" / "llama-batched-bench"
    if not bench.exists():
        return None
    result = subprocess.run([str(bench), "-m", str(gguf_path()), "-c", str(rows * 300 + 64), "-b", "2048",
                             "-ub", "512", "-npp", "128", "-ntg", str(NEW_TOKENS), "-npl", str(rows),
                             "-t", str(threads)], capture_output=True, text=True,
                            env=dict(os.environ, LD_LIBRARY_PATH=str(folder / "bin")))
    line = next((row for row in result.stdout.splitlines() if re.match(r"\|\s+128\s+\|", row)), None)
    if line is None:
        raise SystemExit(f"llama-batched-bench printed no result:\n{result.stdout[-2000:]}{result.stderr[-2000:]}")
    return float([c.strip() for c in line.strip("|").split("|")][7])  # S_TG: decode tokens/s, all streams


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--llamacpp", type=Path, default=ROOT.parent / "llamacpp")
    parser.add_argument("--arm", nargs=3, help=argparse.SUPPRESS)  # kind rows threads, in a child process
    args = parser.parse_args()
    if args.arm:
        print(json.dumps(_arm(args.arm[0], int(args.arm[1]), int(args.arm[2]))))
        return
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor())
    flags = Path("/proc/cpuinfo").read_text()
    print(f"CPU: {cpu}; AVX2 {'avx2' in flags}, AVX-512 BF16 {'avx512_bf16' in flags}\n")
    print("| rows x new tokens | threads | plain tok/s | search row tok/s | llama.cpp tok/s | search / plain | "
          "search / llama.cpp |")
    print("|---|---|---|---|---|---|---|")
    for rows in (1, 8):
        for threads in (1, 2):
            rate = {kind: float(subprocess.run([sys.executable, __file__, "--arm", kind, str(rows), str(threads)],
                                               capture_output=True, text=True, check=True).stdout.split()[-1])
                    for kind in ("plain", "search")}
            peer = _llamacpp(args.llamacpp, rows, threads)
            versus = "–" if peer is None else f"{rate['search'] / peer:.2f}"
            print(f"| {rows} x {NEW_TOKENS} | {threads} | {rate['plain']:.1f} | {rate['search']:.1f} | "
                  f"{'not built' if peer is None else f'{peer:.1f}'} | {rate['search'] / rate['plain']:.2f} | "
                  f"{versus} |", flush=True)


if __name__ == "__main__":
    main()
