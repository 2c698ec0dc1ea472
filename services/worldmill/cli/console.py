"""Shared console output and exit codes for every command (defined in the runtime, for service CLIs too)."""

from __future__ import annotations

from worldmill.runtime.cli_support import EXIT_FAILED, EXIT_OK, EXIT_USAGE, console, err_console, fail, fail_usage

__all__ = ["EXIT_FAILED", "EXIT_OK", "EXIT_USAGE", "console", "err_console", "fail", "fail_usage"]
