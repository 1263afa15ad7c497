"""The one owner of LoRA adapter state in an engine: which adapters are loaded into the model's
layers (a bounded, least-recently-used set), and which row of the running batch uses which.
The serving core asks it to load a request's adapter at admission and to arrange the rows'
adapters before each pass; nothing else touches the layers' LoRA weights."""

from __future__ import annotations

from collections import OrderedDict

from agents.llm.files import ModelFolderError, check_adapter_folder
from agents.llm.multi_lora import MultiLora
from agents.llm.types import AdapterSpec


class AdapterManager:
    def __init__(self, model, base_model_name: str, max_adapters: int = 8):
        self.lora = MultiLora(model)
        self.base_model_name, self.max_adapters = base_model_name, max_adapters
        self._held: OrderedDict[str, AdapterSpec] = OrderedDict()  # key -> spec, least recently used first
        self._arranged: tuple[str | None, ...] | None = None  # the rows' adapters the layers are set for

    def ensure(self, spec: AdapterSpec, in_use: set[str]) -> None:
        """Load an adapter unless it is loaded; evict the least recently used beyond the limit
        (never one in `in_use`). ModelFolderError (or ValueError) for an adapter that cannot be
        served here; a failure changes no layer."""
        if spec.problem:  # its files could not be had here (a failed download)
            raise ModelFolderError(spec.problem)
        if spec.key in self._held:  # the same name and files (another name may share the files)
            self._held.move_to_end(spec.key)
            return
        if spec.base_model and spec.base_model != self.base_model_name:
            raise ModelFolderError(f"{spec.path}: adapter was trained on {spec.base_model!r}, "
                                   f"but this engine serves {self.base_model_name!r}")
        check_adapter_folder(spec.path, spec.sha256)
        self.lora.load(spec.key, spec.path)
        self._held[spec.key] = spec
        while len(self._held) > self.max_adapters:
            victim = next((key for key in self._held if key not in in_use), None)
            if victim is None:
                break
            self.lora.unload(victim)
            del self._held[victim]
        self._arranged = None

    def arrange(self, adapters: tuple[str | None, ...]) -> None:
        """Set the layers for a pass whose row r uses adapters[r] (None: the base model alone)."""
        if adapters != self._arranged:
            self.lora.prepare(list(adapters))
            self._arranged = adapters

    def invalidate(self) -> None:
        """The rows changed: arrange again before the next pass."""
        self._arranged = None

    def clear(self) -> None:
        """Nothing is running: drop the per-row plan (the adapters stay loaded)."""
        self.lora.clear()
        self._arranged = None

    def loaded(self) -> list[str]:
        """The names of the adapters held, least recently used first."""
        return [spec.name for spec in self._held.values()]
