"""Runner settings: the shared runtime settings plus what a runner needs (``WM_GPU_RUNNER_*``)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field

from worldmill.runtime.settings import RuntimeSettings


class RunnerSettings(RuntimeSettings):
    """How a runner runs: its backend family, checkpoints, memory budget and job window."""

    name: str = Field(default="", description="Runner name in events; default: host-pid.")
    backend: Literal["auto", "synthetic"] = Field(
        default="auto", description="'synthetic' forces the CPU stand-in for every job (local demo, benchmarks)."
    )
    checkpoint_root: Path | None = None
    device: str = "cpu"
    safety_checker: bool = True
    memory_budget_gb: float = Field(default=24.0, gt=0, description="Models kept loaded at once, in total.")
    window: int = Field(default=4, ge=1, le=64, description="Jobs held to choose from (keeps loads rare).")
    max_passes: int = Field(default=3, ge=0, description="A job passed over this often is taken next.")
    progress_interval_s: float = Field(default=0.5, gt=0)
    synthetic_load_s: float = Field(default=0.0, ge=0)
    synthetic_s_per_frame: float = Field(default=0.0, ge=0)
