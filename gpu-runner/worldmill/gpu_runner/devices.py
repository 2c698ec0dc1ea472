"""Which device a runner computes on, what it is, and how much memory a job took on it.

``auto`` means CUDA when torch sees a GPU, else the CPU. torch is imported only when it is
needed (a synthetic runner never imports it). On CUDA the peak is ``torch.cuda`` peak *allocated*
memory for the job (reset before it); on the CPU it is the process's peak resident set size, the
closest figure there is (it only grows over the process's life).
"""

from __future__ import annotations

import importlib.util
import resource
import shutil
import subprocess
from dataclasses import dataclass
from typing import Any

__all__ = ["DeviceInfo", "PeakMemory", "default_budget_bytes", "describe_device", "resolve_device"]


def _torch() -> Any:
    import torch  # noqa: PLC0415 - only where a real model runs

    return torch


def resolve_device(requested: str) -> str:
    """``auto`` → ``cuda`` when a GPU is visible to torch, else ``cpu``; anything else as given."""
    if requested != "auto":
        return requested
    if importlib.util.find_spec("torch") is None:
        return "cpu"
    return "cuda" if _torch().cuda.is_available() else "cpu"


@dataclass(frozen=True)
class DeviceInfo:
    """What a device is, for provenance and the cache budget."""

    device: str
    name: str
    total_bytes: int | None
    driver: str | None = None
    cuda: str | None = None
    torch: str | None = None

    def as_provenance(self) -> dict[str, str]:
        """String entries for ``Provenance.extra`` (``gpu.name``, ``gpu.driver``, …)."""
        out = {"gpu.device": self.device, "gpu.name": self.name}
        if self.total_bytes is not None:
            out["gpu.total_bytes"] = str(self.total_bytes)
        for key, value in (("gpu.driver", self.driver), ("gpu.cuda", self.cuda), ("gpu.torch", self.torch)):
            if value:
                out[key] = value
        return out


def _driver_version() -> str | None:
    """The NVIDIA driver version from NVML (nvidia-ml-py) or ``nvidia-smi``; None when neither answers."""
    if importlib.util.find_spec("pynvml") is not None:
        try:
            import pynvml  # type: ignore[import-not-found]  # noqa: PLC0415

            pynvml.nvmlInit()
            version = pynvml.nvmlSystemGetDriverVersion()
            return version.decode() if isinstance(version, bytes) else str(version)
        except Exception:  # noqa: S110 - NVML may be absent in a container; nvidia-smi is tried next
            pass
    smi = shutil.which("nvidia-smi")
    if smi is None:
        return None
    try:
        out = subprocess.run(
            [smi, "--query-gpu=driver_version", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip().splitlines()[0] if out.stdout.strip() else None


def describe_device(device: str) -> DeviceInfo:
    """Name, memory and software versions of ``device`` (already resolved: ``cpu``, ``cuda``, ``cuda:N``)."""
    if not device.startswith("cuda"):
        pages, page_size = _host_memory()
        torch_version = _torch().__version__ if importlib.util.find_spec("torch") is not None else None
        return DeviceInfo(device=device, name="cpu", total_bytes=pages * page_size or None, torch=torch_version)
    torch = _torch()
    props = torch.cuda.get_device_properties(torch.device(device))
    return DeviceInfo(
        device=device,
        name=str(props.name),
        total_bytes=int(props.total_memory),
        driver=_driver_version(),
        cuda=str(torch.version.cuda),
        torch=str(torch.__version__),
    )


def _host_memory() -> tuple[int, int]:
    import os  # noqa: PLC0415

    try:
        return os.sysconf("SC_PHYS_PAGES"), os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError):
        return 0, 0


def default_budget_bytes(info: DeviceInfo, *, fraction: float = 0.9) -> int | None:
    """What a runner may keep loaded on ``info``: ``fraction`` of a GPU's memory (activations need the rest).

    None on the CPU (the caller keeps its configured budget).
    """
    if not info.device.startswith("cuda") or info.total_bytes is None:
        return None
    return int(info.total_bytes * fraction)


class PeakMemory:
    """Peak memory of one job on a device: ``with PeakMemory(device) as peak: …; peak.bytes``."""

    def __init__(self, device: str) -> None:
        self.device = device
        self.bytes: int | None = None
        self.kind = "cuda_max_allocated" if device.startswith("cuda") else "host_max_rss"

    def __enter__(self) -> PeakMemory:
        if self.kind == "cuda_max_allocated":
            torch = _torch()
            torch.cuda.reset_peak_memory_stats(torch.device(self.device))
        return self

    def __exit__(self, *_exc: object) -> None:
        if self.kind == "cuda_max_allocated":
            torch = _torch()
            self.bytes = int(torch.cuda.max_memory_allocated(torch.device(self.device)))
        else:
            self.bytes = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
