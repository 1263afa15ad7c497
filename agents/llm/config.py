"""What an engine is built from: one object, read by the loader (the model's folder and format),
the adapter manager (how many adapters it keeps) and the serving core (rows, KV memory, prefill
and prefix cache, threads). webapp/llm.py fills it from the settings; tests and benches from
keywords (`EngineConfig(path, max_rows=2)`)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class EngineConfig:
    model_path: str
    dtype: str = "auto"  # auto, float32, bfloat16 or float16 (auto: bf16 where the CPU or GPU is fast at it)
    device: str = "cpu"
    int8: bool = False  # int8 weights on CPU (agents/llm/quantization.py)
    base_model_name: str = ""  # the registry's name; adapters trained on another base are refused
    max_adapters: int = 8  # LoRA adapters held at once (the least recently used goes first)
    draft_model_path: str = ""  # a distilled student that proposes tokens (speculative decoding)
    draft_tokens: int = 4
    max_rows: int = 32  # rows decoded together
    kv_budget_tokens: int = 65536  # KV positions over all rows
    prefill_chunk: int = 256  # prompt tokens per prefill step (running rows wait one chunk at most)
    prefix_cache_tokens: int = 8192  # prompt positions kept for the next request that starts the same way
    cancel_poll_s: float = 0.1
    idle_exit_s: float = 30.0  # the core's thread ends after this long without work
    pack_weights: bool = True  # q/k/v and gate/up as one product (agents/llm/packing.py)
    fast_forward: bool = True  # the own forward (agents/llm/llama_step.py) where the architecture is known
    threads: int | None = None  # the core thread's OpenMP team (agents/llm/threads.py); None: inherited
