"""Debian's chromium for the gallery tests, driven by Playwright (its own browser download cannot run here)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

CHROMIUM = "/usr/bin/chromium"
#: Headless on a machine with no network but loopback: no GPU, no background connections, no sandbox (root).
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def chromium_path() -> str:
    """The chromium executable, or fail (not skip) saying how to install it."""
    found = CHROMIUM if Path(CHROMIUM).exists() else shutil.which("chromium")
    if not found:
        pytest.fail("the gallery tests need Debian's chromium: run `make browser` (apt-get install chromium)")
    return found
