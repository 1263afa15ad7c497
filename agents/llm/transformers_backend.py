"""The default engine: one Hugging Face causal LM in this process, serving every request of the
process through one serving core (agents/llm/serving.py).

This file loads the model (float, bf16 or int8), its tokenizer and an optional draft model for
speculative decoding, keeps the LoRA adapters (peft adapters, applied per row by
agents/llm/multi_lora.py) in a bounded cache, and turns requests into prompt tokens. Scheduling,
the KV cache, prefix reuse and decoding live in the core; `stream()` hands requests to it.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import torch

from agents.llm.files import ModelFolderError, check_adapter_folder, check_model_folder
from agents.llm.llama_step import LlamaStep, supports
from agents.llm.multi_lora import MultiLora
from agents.llm.packing import pack_linears, packing_available
from agents.llm.quantization import is_int8_folder, load_int8, quantize_int8
from agents.llm.serving import ServingCore
from agents.llm.types import AdapterSpec, CancelCheck, Delta, GenerationRequest

log = logging.getLogger(__name__)

def cpu_has_fast_bf16() -> bool:
    """AVX-512 BF16 or AMX: bf16 matmuls beat fp32 by a wide margin on such CPUs."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def pick_dtype(name: str, device: str) -> torch.dtype:
    if name == "auto":
        if device.startswith("cuda"):
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.bfloat16 if cpu_has_fast_bf16() else torch.float32
    try:
        return {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[name]
    except KeyError:
        raise ValueError(f"unknown dtype {name!r}: use auto, float32, bfloat16 or float16") from None


class TransformersEngine:
    def __init__(self, model_path: str | Path, *, dtype: str = "auto", device: str = "cpu",
                 int8: bool = False, base_model_name: str = "", max_adapters: int = 8,
                 draft_model_path: str | Path = "", draft_tokens: int = 4, max_rows: int = 32,
                 kv_budget_tokens: int = 65536, prefill_chunk: int = 256, prefix_cache_tokens: int = 8192,
                 cancel_poll_s: float = 0.1, pack_weights: bool = True,
                 fast_forward: bool = True, threads: int | None = None):
        from transformers import AutoModelForCausalLM, AutoTokenizer

        folder = check_model_folder(model_path)
        self.model_path = str(folder)
        self.base_model_name = base_model_name or folder.name
        self.chosen = ""  # why this dtype and these weights (webapp/llm.py's first-start choice, or the settings)
        self.device = device
        self.dtype = pick_dtype(dtype, device)
        self.int8 = int8
        if int8:
            self.dtype = torch.float32
        self.max_adapters = max_adapters
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(folder)
        except (OSError, ValueError) as error:
            raise ModelFolderError(f"{folder}: the tokenizer could not be loaded ({error})") from error
        if is_int8_folder(folder):  # already quantized by training/quantize.py
            self.int8, self.dtype = True, torch.float32
        if self.int8 and not device.startswith("cpu"):
            raise ValueError("int8 dynamic quantization runs on CPU only")
        try:
            if is_int8_folder(folder):
                model = load_int8(folder)
            else:
                model = AutoModelForCausalLM.from_pretrained(folder, dtype=self.dtype)
        except (OSError, ValueError, RuntimeError) as error:
            raise ModelFolderError(f"{folder}: could not be loaded ({error})") from error
        model.to(device).eval()
        if int8 and not is_int8_folder(folder):
            model = quantize_int8(model, self.tokenizer)
        # Not for int8: that option is about memory, and packing copies the output head.
        self.packed = pack_weights and not self.int8 and packing_available(device)
        if self.packed:
            pack_linears(model, rows_hint=max_rows)
        self.model = model
        # Our own forward for the architectures it knows (llama_step.py); transformers' otherwise.
        self.step = self._own_forward(model) if fast_forward else None
        self.lora = MultiLora(self.model)
        self._adapters: OrderedDict[str, AdapterSpec] = OrderedDict()
        eos = self.model.generation_config.eos_token_id
        self.eos_ids = set(eos if isinstance(eos, list) else [eos] if eos is not None else [])
        if self.tokenizer.eos_token_id is not None:
            self.eos_ids.add(self.tokenizer.eos_token_id)
        self.pad_id = self.tokenizer.pad_token_id
        if self.pad_id is None:
            self.pad_id = next(iter(self.eos_ids), 0)
        self.draft, self.draft_tokens = None, draft_tokens
        if draft_model_path:
            self.draft = self._load_draft(draft_model_path)
        self.core = ServingCore(self, max_rows=max_rows, kv_budget_tokens=kv_budget_tokens,
                                prefill_chunk=prefill_chunk, prefix_cache_tokens=prefix_cache_tokens,
                                cancel_poll_s=cancel_poll_s, threads=threads)

    @property
    def weights(self) -> str:
        return "int8" if self.int8 else str(self.dtype).removeprefix("torch.")

    @property
    def forward_kind(self) -> str:
        return "own" if self.step is not None else "transformers"

    @staticmethod
    def _own_forward(model) -> LlamaStep | None:
        """The core's own forward where it knows the architecture; transformers' otherwise, or
        if building it fails (logged: the engine still serves, only slower)."""
        if not supports(model):
            log.info("%s: no own forward for this architecture; transformers' forward serves it",
                     getattr(model.config, "model_type", "?"))
            return None
        try:
            return LlamaStep(model)
        except Exception:  # noqa: BLE001  (any failure here must leave a working engine)
            log.warning("the own forward could not be built; transformers' forward serves instead", exc_info=True)
            return None

    def _load_draft(self, path: str | Path):
        """A smaller model with the same tokenizer (a distilled student) that proposes tokens for
        this one to verify: see _decode_speculative."""
        from transformers import AutoModelForCausalLM, AutoTokenizer

        folder = check_model_folder(path)
        if AutoTokenizer.from_pretrained(folder).get_vocab() != self.tokenizer.get_vocab():
            raise ModelFolderError(f"{folder}: the draft model's tokenizer differs from {self.model_path}'s")
        draft: Any = load_int8(folder) if is_int8_folder(folder) else AutoModelForCausalLM.from_pretrained(
            folder, dtype=self.dtype)
        draft = draft.to(self.device).eval()
        if self.packed:
            pack_linears(draft)
        return draft

    # --- adapters ------------------------------------------------------------------------

    def _ensure_adapter(self, spec: AdapterSpec, in_use: set[str]) -> None:
        """Load an adapter unless it is loaded; evict the least recently used beyond the limit."""
        if spec.problem:  # its files could not be had here (a failed download)
            raise ModelFolderError(spec.problem)
        if spec.key in self._adapters:  # the same name and files (another name may share the files)
            self._adapters.move_to_end(spec.key)
            return
        if spec.base_model and spec.base_model != self.base_model_name:
            raise ModelFolderError(f"{spec.path}: adapter was trained on {spec.base_model!r}, "
                                   f"but this engine serves {self.base_model_name!r}")
        check_adapter_folder(spec.path, spec.sha256)
        self.lora.load(spec.key, spec.path)  # all or nothing: a failure changes no layer
        self._adapters[spec.key] = spec
        while len(self._adapters) > self.max_adapters:
            victim = next((name for name in self._adapters if name not in in_use), None)
            if victim is None:
                break
            self.lora.unload(victim)
            del self._adapters[victim]

    def loaded_adapters(self) -> list[str]:
        """The names of the adapters held, least recently used first."""
        return [spec.name for spec in self._adapters.values()]

    # --- prompts and text ----------------------------------------------------------------

    def prompt_ids(self, request: GenerationRequest) -> list[int]:
        if request.messages is not None:
            text = str(self.tokenizer.apply_chat_template(request.messages, add_generation_prompt=True,
                                                          tokenize=False))
            text += request.assistant_prefix
        elif request.prompt is not None:
            text = request.prompt
        else:
            raise ValueError("a request needs messages or a prompt")
        ids = self.tokenizer(text, add_special_tokens=request.messages is None).input_ids
        if not ids:
            raise ValueError("the prompt is empty")
        return list(ids)

    # --- decoding ------------------------------------------------------------------------

    def stream(self, requests: Iterable[GenerationRequest], cancel: CancelCheck | None = None) -> Iterator[Delta]:
        """Every request joins the serving core's running batch; deltas come as they are made."""
        return self.core.stream(requests, cancel)

    def close(self) -> None:
        self.core.close()
