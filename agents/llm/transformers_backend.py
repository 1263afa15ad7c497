"""The default engine: one Hugging Face causal LM in this process, serving every request of the
process through one serving core.

The engine owns three things and nothing owns it back: the loaded model (agents/llm/loading.py:
weights in their format, tokenizer, own forward, draft model), the adapter manager
(agents/llm/adapters.py: the LoRA adapters in the layers) and the serving core
(agents/llm/serving.py: scheduling, KV cache, prefix reuse, decoding), which is handed the first
two. Everything is built from one EngineConfig.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from pathlib import Path

from agents.llm import loading
from agents.llm.adapters import AdapterManager
from agents.llm.config import EngineConfig
from agents.llm.serving import ServingCore
from agents.llm.types import CancelCheck, Delta, GenerationRequest


class TransformersEngine:
    def __init__(self, config: EngineConfig | str | Path, **settings):
        """`TransformersEngine(EngineConfig(...))`, or a folder and the config's fields as keywords."""
        if not isinstance(config, EngineConfig):
            config = EngineConfig(model_path=str(config), **settings)
        elif settings:
            raise TypeError("give an EngineConfig or keywords, not both")
        self.config = config
        self.loaded = loading.load(config)
        self.base_model_name = config.base_model_name or Path(self.loaded.path).name
        self.chosen = ""  # why this format (webapp/llm.py's first-start choice, or the settings)
        self.adapters = AdapterManager(self.loaded.model, self.base_model_name, config.max_adapters)
        self.core = ServingCore(self.loaded, self.adapters, config)

    # What callers read of the model (webapp/llm.py's metrics, the benches, the tests).
    model = property(lambda self: self.loaded.model)
    tokenizer = property(lambda self: self.loaded.tokenizer)
    model_path = property(lambda self: self.loaded.path)
    dtype = property(lambda self: self.loaded.dtype)
    device = property(lambda self: self.loaded.device)
    int8 = property(lambda self: self.loaded.int8)
    packed = property(lambda self: self.loaded.packed)
    eos_ids = property(lambda self: self.loaded.eos_ids)
    weights = property(lambda self: self.loaded.weights)
    forward_kind = property(lambda self: self.loaded.forward_kind)

    def prompt_ids(self, request: GenerationRequest) -> list[int]:
        return self.loaded.prompt_ids(request)

    def loaded_adapters(self) -> list[str]:
        """The names of the adapters held, least recently used first."""
        return self.adapters.loaded()

    def stream(self, requests: Iterable[GenerationRequest], cancel: CancelCheck | None = None) -> Iterator[Delta]:
        """Every request joins the serving core's running batch; deltas come as they are made."""
        return self.core.stream(requests, cancel)

    def close(self) -> None:
        self.core.close()
