"""What a model costs: its size on disk and its prefill and decode speed; and what training it
costs each rank (the bytes it holds, its tokens a second, its peak memory), in metrics.jsonl."""

from __future__ import annotations

import resource
import time
from pathlib import Path
from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:
    from training.common import Dist, Output
    from training.pipeline import Pipelined
    from training.sharding import Wrapped

# --- measurements ------------------------------------------------------------------------------


def folder_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in Path(folder).rglob("*") if p.is_file() and not p.name.startswith("tokenizer"))


@torch.inference_mode()
def speed(model, tokenizer, text: str, prompt_tokens: int = 256, new_tokens: int = 64, repeats: int = 3) -> dict:
    """Prefill latency of a prompt_tokens prompt and greedy decode speed (one sequence, KV
    cache), the best of `repeats` runs after a warm-up."""
    from transformers import DynamicCache

    device = next(model.parameters()).device
    ids = tokenizer(text, return_tensors="pt", add_special_tokens=False).input_ids[:, :prompt_tokens].to(device)
    best_prefill, best_decode = float("inf"), float("inf")
    for attempt in range(repeats + 1):
        cache = DynamicCache(config=model.config)
        started = time.perf_counter()
        logits = model(input_ids=ids, past_key_values=cache, use_cache=True, logits_to_keep=1).logits[:, -1]
        prefilled = time.perf_counter()
        for _ in range(new_tokens):
            token = logits.argmax(-1, keepdim=True)
            logits = model(input_ids=token, past_key_values=cache, use_cache=True).logits[:, -1]
        done = time.perf_counter()
        if attempt:  # the first run warms up
            best_prefill, best_decode = min(best_prefill, prefilled - started), min(best_decode, done - prefilled)
    return {"prefill_s": round(best_prefill, 4), "decode_tokens_per_s": round(new_tokens / best_decode, 2)}


# --- training, per rank -------------------------------------------------------------------------


def per_rank(dist: Dist, values: dict[str, float]) -> dict[str, list[float]]:
    """Each of this rank's numbers beside the other ranks' (a list indexed by rank)."""
    return {name: dist.all_sum([value if rank == dist.rank else 0.0 for rank in range(dist.world_size)])
            for name, value in values.items()}


def record_memory(wrapped: Wrapped | Pipelined, optimizer, dist: Dist, output: Output) -> None:
    """Each rank's share of the parameters and of the optimizer's state, in metrics.jsonl."""
    held = per_rank(dist, {name: float(value) for name, value in wrapped.held_bytes(optimizer).items()})
    output.metric(event="memory", strategy=wrapped.strategy, **{k: [int(v) for v in vs] for k, vs in held.items()})


def record_speed(tokens: int, seconds: float, dist: Dist, output: Output, strategy: str) -> None:
    """Each rank's training tokens a second and peak resident memory, in metrics.jsonl."""
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # kilobytes on Linux
    figures = per_rank(dist, {"tokens_per_s": tokens / max(seconds, 1e-9), "peak_rss_mb": peak_mb})
    output.metric(event="speed", strategy=strategy, **{k: [round(v, 1) for v in vs] for k, vs in figures.items()})
