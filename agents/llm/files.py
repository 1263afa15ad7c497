"""Model and adapter folders: checksums, and loading with errors that name the path."""

from __future__ import annotations

import hashlib
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
