"""Runner settings: the shared runtime settings plus what a runner needs (``WM_GPU_RUNNER_*``)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field

from worldmill.runtime.settings import RuntimeSettings


class RunnerSettings(RuntimeSettings):
    """How a runner runs: its backend family, device, checkpoints, memory budget, performance and job window."""

    name: str = Field(default="", description="Runner name in events; default: host-pid.")
    backend: Literal["auto", "synthetic"] = Field(
        default="auto", description="'synthetic' forces the CPU stand-in for every job (local demo, benchmarks)."
    )
    checkpoint_root: Path | None = None
    device: str = Field(
        default="auto",
        pattern=r"^(auto|cpu|cuda(:\d+)?)$",
        description="auto: CUDA when torch sees a GPU, else the CPU; or cpu, cuda, cuda:N. One runner per GPU: "
        "pin each with CUDA_VISIBLE_DEVICES (worldmill up --gpus, compose).",
    )
    safety_checker: bool = Field(default=True, description="The Cosmos guardrail, once per video (NVIDIA's licence).")
    memory_budget_gb: float | None = Field(
        default=None,
        gt=0,
        description="Models kept loaded at once, in total. Default: 90 % of the GPU's memory; 24 GB on the CPU.",
    )
    attention_backend: str = Field(
        default="native",
        description="diffusers attention backend (set_attention_backend): native, _native_cudnn, _native_flash, "
        "flash, _flash_3, sage, … where installed.",
    )
    compile: Literal["off", "regional"] = Field(
        default="off", description="regional: torch.compile each transformer block (first job pays the compile)."
    )
    fps_interpolation: Literal["flow", "blend"] = Field(
        default="flow", description="16 → 24 fps and the like: optical-flow interpolation, or linear blending."
    )
    window: int = Field(default=4, ge=1, le=64, description="Jobs held to choose from (keeps loads rare).")
    max_passes: int = Field(default=3, ge=0, description="A job passed over this often is taken next.")
    progress_interval_s: float = Field(default=0.5, gt=0)
    synthetic_load_s: float = Field(default=0.0, ge=0)
    synthetic_s_per_frame: float = Field(default=0.0, ge=0)
    nim_base_url: str | None = Field(
        default=None, description="Served 'nim' backend: the NIM for Cosmos server, e.g. http://nim:8000."
    )
    vllm_omni_base_url: str | None = Field(
        default=None, description="Served 'vllm-omni' backend: the vLLM-Omni server, e.g. http://vllm-omni:8091."
    )
    served_timeout_s: float = Field(
        default=1800.0, gt=0, description="Served backends: bound of one chunk's generation request or polled job."
    )
    served_ready_timeout_s: float = Field(
        default=600.0, gt=0, description="Served backends: how long a load waits for the engine to report ready."
    )
    served_concurrency: int = Field(
        default=1,
        ge=1,
        le=64,
        description="Jobs of served backends (nim, vllm-omni) a runner runs at once (an engine may batch them); "
        "in-process backends always run one at a time.",
    )
    native_transfer_url: str | None = Field(
        default=None,
        description="Base URL of a Cosmos-Transfer2.5 native worker (docker/native_transfer_worker.py), e.g. "
        "http://transfer-native:8700: jobs planned for the native-transfer backend go there.",
    )


#: The budget on a machine without a GPU (or with the synthetic backend) unless configured.
CPU_BUDGET_GB = 24.0
