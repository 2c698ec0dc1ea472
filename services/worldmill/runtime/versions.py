"""The installed version of a distribution: the one lookup (``importlib.metadata``) with its fallback."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version
from typing import overload

__all__ = ["UNKNOWN", "package_version"]

#: worldmill's version when it runs from a tree that was never installed.
UNKNOWN = "0+unknown"


@overload
def package_version(name: str = "worldmill", *, default: str = UNKNOWN) -> str: ...
@overload
def package_version(name: str, *, default: None) -> str | None: ...
def package_version(name: str = "worldmill", *, default: str | None = UNKNOWN) -> str | None:
    """``importlib.metadata.version(name)``, or ``default`` when ``name`` is not installed."""
    try:
        return version(name)
    except PackageNotFoundError:
        return default
