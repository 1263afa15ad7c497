"""Model and adapter versions travel by checksum.

Registering a folder copies its files into the "models" storage under `versions/<sha256>/`
(object storage on several machines, a folder under the data directory on one), and then its
manifest, `manifests/<sha256>.json`, so a copy cut short is never taken for a whole one. A
process that needs a version (an `agents` worker serving it, a `training` worker training on it,
serve_llm) asks for its local folder: on object storage that is a cache folder named by the
checksum, downloaded on first use, verified against the checksum and only then moved into place,
so two processes or threads never see half a download and a corrupt one is never used. What
cannot be fetched raises FetchError with the reason; callers fail only the requests that need
that version.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import shutil
import threading
from collections.abc import Iterator
from pathlib import Path, PurePosixPath

from django.conf import settings
from django.core.files import File
from django.core.files.base import ContentFile
from django.core.files.storage import FileSystemStorage, storages

from agents.llm.files import folder_sha256

log = logging.getLogger(__name__)

class FetchError(Exception):
    """A version whose files could not be brought to this machine; the message says why."""


def _storage():
    return storages["models"]


def key_for(sha256: str) -> str:
    return f"versions/{sha256}"


def _manifest(key: str) -> str:
    """Beside the version's folder, not in it: the folder's checksum covers its files only."""
    return "manifests/" + key.rsplit("/", 1)[-1] + ".json"


def publish(folder: str | Path, sha256: str) -> str:
    """Copy a folder into the store under its checksum (once: a version already there is kept) and
    return its key."""
    storage, key, root = _storage(), key_for(sha256), Path(folder)
    if storage.exists(_manifest(key)):
        return key
    files = sorted(p for p in root.rglob("*") if p.is_file())
    entries = []
    for path in files:
        relative = path.relative_to(root).as_posix()
        name = f"{key}/{relative}"
        if storage.exists(name):  # left by a copy that was cut short
            storage.delete(name)
        with open(path, "rb") as handle:
            saved = storage.save(name, File(handle, name=relative))
        if saved != name:
            raise FetchError(f"the store saved {name} as {saved}")
        entries.append({"name": relative, "size": path.stat().st_size})
    manifest = {"sha256": sha256, "files": entries}
    storage.save(_manifest(key), ContentFile(json.dumps(manifest, indent=1).encode()))
    return key


def remove(sha256: str) -> None:
    """Delete a version from the store (a superseded training checkpoint): the manifest first, so
    nobody starts a download of what is being deleted."""
    storage, key = _storage(), key_for(sha256)
    storage.delete(_manifest(key))
    if isinstance(storage, FileSystemStorage):
        shutil.rmtree(storage.path(key), ignore_errors=True)
        return
    folders = [key]
    while folders:
        folder = folders.pop()
        subfolders, files = storage.listdir(folder)
        folders += [f"{folder}/{name}" for name in subfolders]
        for name in files:
            storage.delete(f"{folder}/{name}")


_threads = threading.Lock()


@contextlib.contextmanager
def _locked(lock_file: Path) -> Iterator[None]:
    """One download per version at a time: across this process's threads and other processes."""
    with _threads, open(lock_file, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def local_folder(sha256: str, key: str, cache: Path | None = None, verify: bool = False) -> Path:
    """This machine's copy of the version stored under `key` with checksum `sha256`: the store's
    own folder when the store is local, else the cache's `<sha256>/`, downloaded and verified the
    first time. With `verify`, a copy already there is checked again (a link, or files changed
    since, and it is replaced by a fresh download)."""
    storage = _storage()
    if isinstance(storage, FileSystemStorage) and cache is None:
        return Path(storage.path(key))
    cache = Path(cache or settings.MODEL_CACHE_DIR)
    target = cache / sha256
    if target.is_symlink() or target.is_file() or (verify and target.is_dir() and not intact(target, sha256)):
        log.warning("%s: the cached copy is not the registered version; fetching it again", target)
        with _locked(cache / f".{sha256}.lock"):
            if target.is_symlink() or target.is_file():
                target.unlink()
            else:
                shutil.rmtree(target, ignore_errors=True)
    if target.is_dir():  # only ever moved into place after its checksum matched
        return target
    cache.mkdir(parents=True, exist_ok=True)
    with _locked(cache / f".{sha256}.lock"):
        if target.is_dir():  # another thread or process fetched it while this one waited
            return target
        partial = cache / f".{sha256}.{os.getpid()}.partial"
        shutil.rmtree(partial, ignore_errors=True)
        try:
            _download(storage, key, partial)
            actual = folder_sha256(partial)
            if actual != sha256:
                raise FetchError(f"{key}: the downloaded files do not match the registered checksum "
                                 f"({sha256[:12]}…, downloaded {actual[:12]}…)")
            os.rename(partial, target)
        finally:
            shutil.rmtree(partial, ignore_errors=True)
    return target


def intact(folder: Path, sha256: str) -> bool:
    """A cached copy holds exactly the registered files: no links, and the checksum matches."""
    if folder.is_symlink() or any(path.is_symlink() for path in folder.rglob("*")):
        return False
    return folder_sha256(folder) == sha256


def _download(storage, key: str, into: Path) -> None:
    try:
        with storage.open(_manifest(key), "rb") as handle:
            manifest = json.loads(handle.read())
    except (OSError, ValueError) as error:
        raise FetchError(f"{key}: the version is not in the store ({type(error).__name__}: {error})") from error
    except Exception as error:  # noqa: BLE001  (botocore's errors: the store answered, but not with the file)
        raise FetchError(f"{key}: the store could not be read ({type(error).__name__}: {error})") from error
    files = manifest.get("files") if isinstance(manifest, dict) else None
    if not isinstance(files, list) or not all(isinstance(entry, dict) and isinstance(entry.get("name"), str)
                                              and entry["name"] for entry in files):
        raise FetchError(f"{key}: the version's manifest is not a list of its files; register the version again")
    for entry in files:
        name = PurePosixPath(entry["name"])
        if name.is_absolute() or ".." in name.parts:
            raise FetchError(f"{key}: the manifest names a file outside the version ({name})")
        path = into / name
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            with storage.open(f"{key}/{name}", "rb") as source, open(path, "wb") as out:
                shutil.copyfileobj(source, out, 1 << 20)
        except Exception as error:  # noqa: BLE001  (a file missing in the store, a network error)
            raise FetchError(f"{key}/{name}: could not be downloaded ({type(error).__name__}: {error})") from error
