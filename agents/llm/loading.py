"""A Hugging Face causal LM as the serving core runs it: the model in the chosen format (float,
bf16 or int8, q/k/v and gate/up packed), its tokenizer and end tokens, the own forward where the
architecture is known, and an optional draft model for speculative decoding. `load(config)` builds
it; nothing in it knows who serves it."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from agents.llm.config import EngineConfig
from agents.llm.files import ModelFolderError, check_model_folder
from agents.llm.llama_step import LlamaStep, supports
from agents.llm.packing import pack_linears, packing_available
from agents.llm.quantization import is_int8_folder, load_int8, quantize_int8
from agents.llm.types import GenerationRequest

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


@dataclass
class LoadedModel:
    model: Any  # the transformers module (its linears possibly packed or int8)
    tokenizer: Any
    path: str
    dtype: torch.dtype
    device: str
    int8: bool
    packed: bool
    step: LlamaStep | None  # the own forward; None: transformers' forward serves
    draft: Any = None
    draft_tokens: int = 4
    eos_ids: set[int] = field(default_factory=set)
    pad_id: int = 0

    @property
    def weights(self) -> str:
        return "int8" if self.int8 else str(self.dtype).removeprefix("torch.")

    @property
    def forward_kind(self) -> str:
        return "own" if self.step is not None else "transformers"

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


def load(config: EngineConfig) -> LoadedModel:
    """The model of `config.model_path` in the format the config asks (or its folder is in);
    ModelFolderError when the folder cannot be served."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder = check_model_folder(config.model_path)
    device = config.device
    quantized = is_int8_folder(folder)  # already quantized by training/quantize.py
    int8 = config.int8 or quantized
    dtype = torch.float32 if int8 else pick_dtype(config.dtype, device)
    if int8 and not device.startswith("cpu"):
        raise ValueError("int8 dynamic quantization runs on CPU only")
    try:
        tokenizer = AutoTokenizer.from_pretrained(folder)
    except (OSError, ValueError) as error:
        raise ModelFolderError(f"{folder}: the tokenizer could not be loaded ({error})") from error
    try:
        model: Any = load_int8(folder) if quantized else AutoModelForCausalLM.from_pretrained(folder, dtype=dtype)
    except (OSError, ValueError, RuntimeError) as error:
        raise ModelFolderError(f"{folder}: could not be loaded ({error})") from error
    model.to(device).eval()
    if int8 and not quantized:
        model = quantize_int8(model, tokenizer)
    # Not for int8: that option is about memory, and packing copies the output head.
    packed = config.pack_weights and not int8 and packing_available(device)
    if packed:
        pack_linears(model, rows_hint=config.max_rows)
    loaded = LoadedModel(model, tokenizer, str(folder), dtype, device, int8, packed,
                         step=_own_forward(model) if config.fast_forward else None,
                         draft_tokens=config.draft_tokens, eos_ids=_eos_ids(model, tokenizer))
    loaded.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else next(iter(loaded.eos_ids), 0)
    if config.draft_model_path:
        loaded.draft = _load_draft(config.draft_model_path, loaded)
    return loaded


def _eos_ids(model, tokenizer) -> set[int]:
    eos = model.generation_config.eos_token_id
    ids = set(eos if isinstance(eos, list) else [eos] if eos is not None else [])
    if tokenizer.eos_token_id is not None:
        ids.add(tokenizer.eos_token_id)
    return ids


def _own_forward(model) -> LlamaStep | None:
    """The core's own forward where it knows the architecture; transformers' otherwise, or if
    building it fails (logged: the engine still serves, only slower)."""
    if not supports(model):
        log.info("%s: no own forward for this architecture; transformers' forward serves it",
                 getattr(model.config, "model_type", "?"))
        return None
    try:
        return LlamaStep(model)
    except Exception:  # noqa: BLE001  (any failure here must leave a working engine)
        log.warning("the own forward could not be built; transformers' forward serves instead", exc_info=True)
        return None


def _load_draft(path: str | Path, target: LoadedModel):
    """A smaller model with the same tokenizer (a distilled student) that proposes tokens for
    the target to verify: see speculative.py."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder = check_model_folder(path)
    if AutoTokenizer.from_pretrained(folder).get_vocab() != target.tokenizer.get_vocab():
        raise ModelFolderError(f"{folder}: the draft model's tokenizer differs from {target.path}'s")
    draft: Any = load_int8(folder) if is_int8_folder(folder) else AutoModelForCausalLM.from_pretrained(
        folder, dtype=target.dtype)
    draft = draft.to(target.device).eval()
    if target.packed:
        pack_linears(draft)
    return draft
