"""Waiting in synchronous tests (services behind TestClient answer from their own threads)."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any


def wait_for(fetch: Callable[[], Any], ok: Callable[[Any], bool], timeout_s: float = 30.0, every_s: float = 0.1) -> Any:
    """Call ``fetch`` until ``ok`` holds for its value and return it; fail with the last value at the timeout."""
    deadline = time.monotonic() + timeout_s
    value = fetch()
    while not ok(value):
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout_s} s; last: {value}")
        time.sleep(every_s)
        value = fetch()
    return value
