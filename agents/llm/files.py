"""Model and adapter folders: checksums, and loading with errors that name the path."""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path


class ModelFolderError(Exception):
    """A model or adapter folder that cannot be used; the message names the path and the problem."""


WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin",
                "pytorch_model.bin.index.json", "model_int8.pt")


def folder_sha256(path: str | Path) -> str:
    """One digest over every file in a folder (names and contents), independent of file order."""
    root = Path(path)
    digest = hashlib.sha256()
    for file in sorted(p for p in root.rglob("*") if p.is_file()):
        digest.update(str(file.relative_to(root)).encode() + b"\0")
        with open(file, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
        digest.update(b"\0")
    return digest.hexdigest()


def check_model_folder(path: str | Path) -> Path:
    folder = Path(path)
    if not folder.is_dir():
        raise ModelFolderError(f"{folder}: no such model folder")
    if not (folder / "config.json").is_file():
        raise ModelFolderError(f"{folder}: config.json is missing, so this is not a Hugging Face model folder")
    if not any((folder / name).is_file() for name in WEIGHT_FILES):
        raise ModelFolderError(f"{folder}: no weights (expected one of {', '.join(WEIGHT_FILES)})")
    if not any((folder / name).is_file() for name in ("tokenizer.json", "tokenizer_config.json")):
        raise ModelFolderError(f"{folder}: no tokenizer files (tokenizer.json)")
    return folder


def check_adapter_folder(path: str | Path, sha256: str = "") -> Path:
    folder = Path(path)
    if not folder.is_dir():
        raise ModelFolderError(f"{folder}: no such adapter folder")
    if not (folder / "adapter_config.json").is_file():
        raise ModelFolderError(f"{folder}: adapter_config.json is missing")
    if not any((folder / n).is_file() for n in ("adapter_model.safetensors", "adapter_model.bin")):
        raise ModelFolderError(f"{folder}: adapter weights are missing (adapter_model.safetensors)")
    if sha256:
        actual = folder_sha256(folder)
        if actual != sha256:
            raise ModelFolderError(f"{folder}: checksum mismatch (registered {sha256[:12]}…, found {actual[:12]}…)")
    return folder


LORA_KEY = re.compile(r"(?:base_model\.model\.)?(.+)\.lora_([AB])\.weight")


def check_adapter_weights(folder: str | Path, base_folder: str | Path | None = None) -> None:
    """An adapter's weights are usable: every tensor a LoRA factor, every value a finite number
    (one NaN decodes NaN for every token of the rows that use it), and, given the base model's
    folder, every factor on a Linear weight of that model with shapes that fit it. Read from the
    safetensors files' headers and tensors, no model loaded. Raises ModelFolderError naming the
    problem."""
    import torch
    from safetensors import SafetensorError, safe_open

    folder = Path(folder)
    path = folder / "adapter_model.safetensors"
    if not path.is_file():
        return  # a pickled adapter: checked as it is loaded (multi_lora.py)
    base = (_base_shapes(Path(base_folder)) or None) if base_folder else None  # None: no safetensors to read
    factors: dict[str, dict[str, tuple[int, ...]]] = {}
    try:
        with safe_open(str(path), "pt") as tensors:
            for key in tensors.keys():  # noqa: SIM118  (a safetensors handle, not a dict: no iteration)
                match = LORA_KEY.fullmatch(key)
                if match is None:
                    raise ModelFolderError(f"{folder}: unexpected tensor {key!r} in the adapter")
                tensor = tensors.get_tensor(key)
                if not bool(torch.isfinite(tensor).all()):
                    raise ModelFolderError(f"{folder}: {key} holds values that are not finite numbers (NaN or "
                                           "infinity); retrain or re-export the adapter")
                factors.setdefault(match.group(1), {})[match.group(2)] = tuple(tensor.shape)
    except SafetensorError as error:
        raise ModelFolderError(f"{folder}: the adapter's weights cannot be read ({error})") from error
    if not factors:
        raise ModelFolderError(f"{folder}: the adapter has no LoRA weights")
    for module, pair in factors.items():
        if base is None:
            break
        weight = base.get(f"{module}.weight")
        if weight is None or len(weight) != 2:
            raise ModelFolderError(f"{folder}: {module} is not a Linear layer of the base model "
                                   "(an adapter for another model?)")
        a, b = pair.get("A"), pair.get("B")
        out_features, in_features = weight
        if a is None or b is None or a[1] != in_features or b != (out_features, a[0]):
            raise ModelFolderError(f"{folder}: {module} has shapes {a}/{b}, which do not fit the base model's "
                                   f"{in_features}->{out_features} (an adapter for another model?)")


def _base_shapes(folder: Path) -> dict[str, tuple[int, ...]]:
    """Every weight's shape in a model folder's safetensors files (headers only)."""
    from safetensors import safe_open

    index = folder / "model.safetensors.index.json"
    files = sorted(set(json.loads(index.read_text())["weight_map"].values())) if index.is_file() else \
        (["model.safetensors"] if (folder / "model.safetensors").is_file() else [])
    shapes: dict[str, tuple[int, ...]] = {}
    for name in files:
        with safe_open(str(folder / name), "pt") as tensors:
            for key in tensors.keys():  # noqa: SIM118  (a safetensors handle, not a dict: no iteration)
                shapes[key] = tuple(tensors.get_slice(key).get_shape())
    return shapes
