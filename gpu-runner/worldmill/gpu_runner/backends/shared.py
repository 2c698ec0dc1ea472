"""Components loaded once per runner and shared by every backend that uses the same weights.

A runner that switches from an edge to a depth Transfer job needs another controlnet, not another
text encoder, transformer and VAE; Predict and Transfer of one family share their text encoder
and VAE when the weights are the same files. Components are keyed by *content*: a folder in the
Hugging Face cache by the blob names its files resolve to (the hub names LFS blobs by their
SHA-256), any other folder by a hash of its files (:func:`checkpoint_sha256`) — plus the dtype and
device they are loaded in. Each backend holding a component holds a reference; the last release
drops it. The model cache counts a shared component once (``Backend.memory_parts``).
"""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["SharedComponents", "checkpoint_sha256", "content_identity"]

_hash_cache: dict[tuple[str, tuple[tuple[str, int, int], ...]], str] = {}
_hash_lock = threading.Lock()


def _files(folders: tuple[Path, ...]) -> list[tuple[Path, str]]:
    files: list[tuple[Path, str]] = []
    for n, folder in enumerate(folders):
        files.extend(
            (p, f"{n}/{p.relative_to(folder).as_posix()}")
            for p in folder.rglob("*")
            if p.is_file() and not any(part.startswith(".") for part in p.relative_to(folder).parts)
        )
    files.sort(key=lambda item: item[1])
    return files


def checkpoint_sha256(*folders: Path) -> str:
    """SHA-256 over every file of the folders (relative path and content, sorted; symlinks followed).

    Covers the weights and the configs that give them meaning. A file that resolves to a Hugging
    Face cache blob contributes its blob name instead of its bytes: the hub names blobs by their
    content (SHA-256 for LFS files, the git object id for small ones), so this is the same digest
    of the contents without reading gigabytes. Cached per process by path, size and modification time.
    """
    files = _files(folders)
    stats = tuple((name, (st := path.stat()).st_size, st.st_mtime_ns) for path, name in files)
    key = ("|".join(str(f.resolve()) for f in folders), stats)
    with _hash_lock:
        if key in _hash_cache:
            return _hash_cache[key]
    digest = hashlib.sha256()
    for path, name in files:
        digest.update(name.encode() + b"\0")
        real = path.resolve()
        if real.parent.name == "blobs":
            digest.update(b"blob:" + real.name.encode())
        else:
            with path.open("rb") as fh:
                while block := fh.read(1 << 20):
                    digest.update(block)
        digest.update(b"\0")
    value = digest.hexdigest()
    with _hash_lock:
        _hash_cache[key] = value
    return value


def content_identity(folder: Path) -> str:
    """A short content key of a component folder (see :func:`checkpoint_sha256`)."""
    return checkpoint_sha256(folder)[:24]


@dataclass
class _Entry:
    value: Any
    size: int
    refs: int


class SharedComponents:
    """Loaded components by key, with reference counts. Thread-safe; loads outside the lock."""

    def __init__(self) -> None:
        self._entries: dict[str, _Entry] = {}
        self._lock = threading.Lock()

    def peek(self, key: str) -> Any | None:
        """The loaded component, without taking a reference (None when not loaded)."""
        with self._lock:
            entry = self._entries.get(key)
            return None if entry is None else entry.value

    def acquire(self, key: str, load: Callable[[], Any], size: Callable[[Any], int]) -> Any:
        """The component for ``key`` with one more reference: loaded by ``load()`` unless it is already."""
        with self._lock:
            entry = self._entries.get(key)
            if entry is not None:
                entry.refs += 1
                return entry.value
        value = load()
        with self._lock:
            entry = self._entries.get(key)
            if entry is not None:  # loaded meanwhile by another thread: keep that one
                entry.refs += 1
                return entry.value
            self._entries[key] = _Entry(value=value, size=size(value), refs=1)
            return value

    def adopt(self, key: str, value: Any, size: int) -> Any:
        """Register a component loaded elsewhere (e.g. by ``from_pretrained``) and take a reference."""
        with self._lock:
            entry = self._entries.get(key)
            if entry is not None:
                entry.refs += 1
                return entry.value
            self._entries[key] = _Entry(value=value, size=size, refs=1)
            return value

    def release(self, key: str) -> bool:
        """Drop one reference; True when that was the last and the component is gone."""
        with self._lock:
            entry = self._entries.get(key)
            if entry is None:
                return False
            entry.refs -= 1
            if entry.refs > 0:
                return False
            del self._entries[key]
            return True

    def size(self, key: str) -> int:
        """Bytes of a loaded component (0 when not loaded)."""
        with self._lock:
            entry = self._entries.get(key)
            return 0 if entry is None else entry.size

    def loaded(self) -> dict[str, int]:
        """Every loaded component's key and size."""
        with self._lock:
            return {k: e.size for k, e in self._entries.items()}

    def references(self, key: str) -> int:
        """How many holders a component has."""
        with self._lock:
            entry = self._entries.get(key)
            return 0 if entry is None else entry.refs
