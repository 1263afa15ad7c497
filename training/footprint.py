"""What a model costs: its size on disk and its prefill and decode speed."""

from __future__ import annotations

import time
from pathlib import Path

import torch

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
